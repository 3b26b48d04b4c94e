//! Hand-written SVG line charts with logarithmic axes: small, dependency-free and
//! readable in a browser or on a code host.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Stroke colour (CSS).
    pub color: String,
    /// One y per x (None leaves a gap).
    pub ys: Vec<Option<f64>>,
}

/// A line chart over log-scaled x positions and a log-scaled y axis.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X values (positive; placed on a log scale) and their tick labels.
    pub xs: Vec<(f64, String)>,
    /// The lines.
    pub series: Vec<Series>,
}

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A compact label for a y value on a log axis (1, 10, 100, 1k, 10k, 1M, ...).
fn si(v: f64) -> String {
    let (d, suffix) = if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if x >= 1.0 && (x - x.round()).abs() < 1e-9 {
        format!("{}{suffix}", x.round() as u64)
    } else {
        format!("{x}{suffix}")
    }
}

impl Chart {
    /// Renders the chart.
    pub fn render(&self) -> String {
        let values: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.ys.iter().flatten().copied())
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = if values.is_empty() {
            (1.0, 10.0)
        } else {
            (lo, hi)
        };
        let y0 = lo.log10().floor();
        let y1 = hi.log10().ceil().max(y0 + 1.0);
        let x_logs: Vec<f64> = self.xs.iter().map(|(x, _)| x.max(1e-12).log10()).collect();
        let xmin = x_logs.iter().copied().fold(f64::INFINITY, f64::min);
        let xmax = x_logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = if xmax > xmin { xmax - xmin } else { 1.0 };
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let px = |lx: f64| LEFT + 20.0 + (lx - xmin) / span * (pw - 40.0);
        let py = |v: f64| TOP + ph - (v.log10() - y0) / (y1 - y0) * ph;

        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{tx}" y="24" font-size="15" font-weight="bold" text-anchor="middle">{title}</text>
"##,
            tx = LEFT + pw / 2.0,
            title = esc(&self.title)
        );
        // Horizontal grid: decades, plus 2x and 5x minor lines.
        let mut decade = y0;
        while decade <= y1 {
            let v = 10f64.powf(decade);
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#cccccc"/><text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
                x2 = LEFT + pw,
                lx = LEFT - 6.0,
                ty = y + 4.0,
                label = si(v)
            );
            for m in [2.0, 5.0] {
                let mv = v * m;
                if decade < y1 && mv.log10() < y1 {
                    let y = py(mv);
                    let _ = writeln!(
                        s,
                        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#eeeeee"/>"##,
                        x2 = LEFT + pw
                    );
                }
            }
            decade += 1.0;
        }
        for ((_, label), lx) in self.xs.iter().zip(&x_logs) {
            let x = px(*lx);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{yb}" stroke="#eeeeee"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{l}</text>"##,
                yb = TOP + ph,
                ty = TOP + ph + 18.0,
                l = esc(label)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333333"/>
<text x="{cx}" y="{by}" text-anchor="middle">{xl}</text>
<text transform="translate(18,{cy}) rotate(-90)" text-anchor="middle">{yl}</text>"##,
            cx = LEFT + pw / 2.0,
            by = H - 18.0,
            cy = TOP + ph / 2.0,
            xl = esc(&self.x_label),
            yl = esc(&self.y_label)
        );
        for (k, series) in self.series.iter().enumerate() {
            let mut path = String::new();
            let mut pen_down = false;
            for (y, lx) in series.ys.iter().zip(&x_logs) {
                match y {
                    Some(v) if *v > 0.0 && v.is_finite() => {
                        let _ = write!(
                            path,
                            "{}{:.1},{:.1} ",
                            if pen_down { "L" } else { "M" },
                            px(*lx),
                            py(*v)
                        );
                        pen_down = true;
                    }
                    _ => pen_down = false,
                }
            }
            let _ = writeln!(
                s,
                r##"<path d="{path}" fill="none" stroke="{c}" stroke-width="2.2"/>"##,
                c = series.color
            );
            for (y, lx) in series.ys.iter().zip(&x_logs) {
                if let Some(v) = y.filter(|v| *v > 0.0 && v.is_finite()) {
                    let _ = writeln!(
                        s,
                        r##"<circle cx="{:.1}" cy="{:.1}" r="3.2" fill="{c}"><title>{n}: {v:.1}</title></circle>"##,
                        px(*lx),
                        py(v),
                        c = series.color,
                        n = esc(&series.name)
                    );
                }
            }
            let ly = TOP + 10.0 + k as f64 * 20.0;
            let lx = LEFT + pw + 14.0;
            let _ = writeln!(
                s,
                r##"<line x1="{lx}" y1="{ly}" x2="{x2}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{tx}" y="{ty}">{n}</text>"##,
                x2 = lx + 22.0,
                tx = lx + 28.0,
                ty = ly + 4.0,
                c = series.color,
                n = esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_points_gaps_and_labels() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            xs: vec![
                (1.0, "1".into()),
                (10.0, "10".into()),
                (100.0, "100".into()),
            ],
            series: vec![Series {
                name: "a".into(),
                color: "#123456".into(),
                ys: vec![Some(5.0), None, Some(5000.0)],
            }],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t &lt;1&gt;"));
        // Two points, the gap breaks the line: two moves, no line-to.
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches(" M").count() + svg.matches("\"M").count(), 2);
        assert!(svg.contains(">1k<") && svg.contains(">10k<"));
    }
}
