//! Metrics snapshots as Python dicts (`metrics()`), for the server and the client. The
//! Prometheus text (`metrics_text()`) is the driver's, unchanged.

use lightning_tokio::{ClientMetrics, Histogram, IoCounters, PathSummary, ServerMetrics};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `{"count", "sum", "buckets": [(le, cumulative count), ...]}`; the last `le` is `inf`.
fn histogram<'py>(py: Python<'py>, h: &Histogram) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", h.count())?;
    d.set_item("sum", h.sum_seconds())?;
    d.set_item("buckets", h.cumulative_buckets())?;
    Ok(d)
}

fn io<'py>(py: Python<'py>, io: &IoCounters) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("datagrams_in", io.datagrams_in)?;
    d.set_item("datagrams_out", io.datagrams_out)?;
    d.set_item("bytes_in", io.bytes_in)?;
    d.set_item("bytes_out", io.bytes_out)?;
    d.set_item("send_errors", io.send_errors)?;
    Ok(d)
}

fn path<'py>(py: Python<'py>, p: &PathSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("connections", p.connections)?;
    d.set_item("rtt_min_seconds", p.rtt_min.as_secs_f64())?;
    d.set_item("rtt_mean_seconds", p.rtt_mean.as_secs_f64())?;
    d.set_item("rtt_max_seconds", p.rtt_max.as_secs_f64())?;
    d.set_item("cwnd_min_bytes", p.cwnd_min)?;
    d.set_item("cwnd_mean_bytes", p.cwnd_mean)?;
    d.set_item("cwnd_max_bytes", p.cwnd_max)?;
    d.set_item("sent_packets", p.sent_packets)?;
    d.set_item("lost_packets", p.lost_packets)?;
    d.set_item("lost_bytes", p.lost_bytes)?;
    d.set_item("congestion_events", p.congestion_events)?;
    Ok(d)
}

fn pairs<'py>(
    py: Python<'py>,
    items: impl IntoIterator<Item = (&'static str, u64)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// The server's snapshot; the keys are listed in `_native.pyi` (`ServerMetrics`).
pub fn server<'py>(py: Python<'py>, m: &ServerMetrics) -> PyResult<Bound<'py, PyDict>> {
    let s = &m.stats;
    let d = PyDict::new(py);
    d.set_item("connections", m.connections)?;
    d.set_item("unauthenticated_connections", m.unauthenticated)?;
    d.set_item("validators", m.validators)?;
    d.set_item("connections_accepted", s.accepted)?;
    d.set_item("connections_closed", pairs(py, m.closed.by_reason())?)?;
    d.set_item("handshakes_accepted", s.handshakes_ok)?;
    d.set_item(
        "handshakes_refused",
        pairs(py, m.handshakes_refused.iter())?,
    )?;
    d.set_item("admission_refusals", pairs(py, m.admission_refusals())?)?;
    d.set_item("retries", s.retried)?;
    d.set_item("evictions", s.evicted)?;
    d.set_item(
        "timeouts",
        pairs(
            py,
            [
                ("auth", s.auth_timeouts),
                ("read", s.read_timeouts),
                ("send", s.send_timeouts),
            ],
        )?,
    )?;
    let requests = PyDict::new(py);
    let handler = PyDict::new(py);
    let chunks = PyDict::new(py);
    for syn in &m.synapses {
        requests.set_item(
            &syn.synapse,
            pairs(
                py,
                [
                    ("ok", syn.ok),
                    ("error", syn.error),
                    ("timed_out", syn.timed_out),
                    ("peer_cancelled", syn.peer_cancelled),
                    ("connection_lost", syn.connection_lost),
                    ("peer_stalled", syn.peer_stalled),
                ],
            )?,
        )?;
        handler.set_item(&syn.synapse, histogram(py, &syn.handler_seconds)?)?;
        chunks.set_item(
            &syn.synapse,
            pairs(
                py,
                [
                    ("chunks", syn.stream_chunks),
                    ("bytes", syn.stream_chunk_bytes),
                ],
            )?,
        )?;
    }
    requests.set_item(
        lightning_tokio::UNKNOWN_SYNAPSE_LABEL,
        pairs(
            py,
            [
                ("unrecognized_synapse", s.unknown_synapse),
                ("unauthenticated", s.unauthenticated_requests),
                ("malformed", s.malformed_requests),
            ],
        )?,
    )?;
    d.set_item("requests", requests)?;
    d.set_item("handler_seconds", handler)?;
    d.set_item("stream_chunks", chunks)?;
    d.set_item("requests_in_flight", m.requests_in_flight)?;
    d.set_item("queued_bytes", m.queued_bytes)?;
    d.set_item("reserved_request_bytes", m.reserved_request_bytes)?;
    d.set_item("parked_streams", m.parked_streams)?;
    d.set_item("replay_cache_nonces", m.active_nonces)?;
    d.set_item("udp", io(py, &m.io)?)?;
    d.set_item("path", path(py, &m.path)?)?;
    Ok(d)
}

/// The client's snapshot; the keys are listed in `_native.pyi` (`ClientMetrics`).
pub fn client<'py>(py: Python<'py>, m: &ClientMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("connections", m.connections)?;
    d.set_item("connections_closed", pairs(py, m.closed.by_reason())?)?;
    d.set_item("handshakes_accepted", m.handshakes_ok)?;
    d.set_item("handshakes_failed", pairs(py, m.handshakes_failed.iter())?)?;
    let requests = PyDict::new(py);
    let latency = PyDict::new(py);
    let chunks = PyDict::new(py);
    for syn in &m.synapses {
        requests.set_item(
            &syn.synapse,
            pairs(
                py,
                lightning_tokio::CLIENT_OUTCOMES
                    .iter()
                    .copied()
                    .zip(syn.outcomes),
            )?,
        )?;
        latency.set_item(&syn.synapse, histogram(py, &syn.latency_seconds)?)?;
        chunks.set_item(
            &syn.synapse,
            pairs(
                py,
                [
                    ("chunks", syn.stream_chunks),
                    ("bytes", syn.stream_chunk_bytes),
                ],
            )?,
        )?;
    }
    d.set_item("requests", requests)?;
    d.set_item("latency_seconds", latency)?;
    d.set_item("stream_chunks", chunks)?;
    d.set_item("requests_in_flight", m.requests_in_flight)?;
    d.set_item("udp", io(py, &m.io)?)?;
    d.set_item("path", path(py, &m.path)?)?;
    Ok(d)
}
