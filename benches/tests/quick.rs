//! CI smoke check: every system answers every cell of a tiny run correctly. Timings are
//! recorded but never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_benches::{run, write_outputs, Options, Plan, SYSTEM_NAMES};

#[test]
fn every_system_answers_every_cell() {
    let plan = Plan::tiny();
    let sizes = plan.sizes.clone();
    let sweep = plan.sweep.clone();
    let report = run(
        plan,
        Options {
            server_exe: Some(env!("CARGO_BIN_EXE_lightning-bench").into()),
            verbose: false,
        },
    )
    .unwrap();
    assert!(report.all_correct(), "failures: {:#?}", report.failures);

    for system in SYSTEM_NAMES {
        let setup = report.setup.iter().find(|c| c.system == system).unwrap();
        assert!(setup.setup.n > 0, "{system}: no setup samples");
        for size in &sizes {
            let t = report
                .throughput
                .iter()
                .find(|c| c.system == system && c.size == *size)
                .unwrap_or_else(|| panic!("{system}: no throughput at {size}"));
            assert!(t.requests > 0, "{system}: no request answered at {size}");
            let l = report
                .latency
                .iter()
                .find(|c| c.system == system && c.size == *size)
                .unwrap_or_else(|| panic!("{system}: no latency at {size}"));
            assert!(l.latency.n > 0);
        }
        for c in &sweep {
            assert!(report
                .sweep
                .iter()
                .any(|x| x.system == system && x.concurrency == *c && x.requests > 0));
        }
        let fan = report.fanout.iter().find(|c| c.system == system).unwrap();
        assert!(fan.round.n > 0, "{system}: no fan-out round");
        let conns = report
            .connections
            .iter()
            .find(|c| c.system == system)
            .unwrap();
        assert_eq!(conns.measured_in, "server process");
        assert!(conns.rss_after > 0, "{system}: no server memory reading");
    }

    let dir = std::env::temp_dir().join(format!("lightning-bench-{}", std::process::id()));
    write_outputs(&report, &dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["mode"], "tiny");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("Every system answered every request correctly."));
    for chart in [
        "throughput_by_payload.svg",
        "latency_p50_by_payload.svg",
        "latency_p99_by_payload.svg",
        "throughput_by_concurrency.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("lightning-tokio"),
            "{chart}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
