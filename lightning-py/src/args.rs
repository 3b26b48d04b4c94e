//! Arguments that come from Python callers: axons, requests, timeouts, wallets.
//!
//! Checked in btlightning's order (axon, then request, then timeout) with its exception
//! types and messages, so callers' error handling keeps working.

use std::time::Duration;

use lightning_tokio::{CongestionControl, QuicAxonInfo, QuicRequest};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::dict_to_datamap;
use crate::errors::config_error;

/// Longest accepted `timeout_secs` (ten years, as btlightning).
const MAX_TIMEOUT_SECS: f64 = 315_360_000.0;

/// One field of an axon: a dict item or an attribute (bittensor's `AxonInfo`,
/// `QuicAxonInfo`). `name` is interned by the callers: building the key string for every
/// lookup showed in profiles of the asyncio query path.
fn field<'py>(
    axon: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(dict) = axon.cast::<PyDict>() {
        return dict.get_item(name);
    }
    match axon.getattr(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(axon.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

fn required<'py>(
    axon: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    field(axon, name)?.ok_or_else(|| PyKeyError::new_err(format!("Missing '{name}' field")))
}

/// An axon from a dict or any object with `hotkey`, `ip`, `port` (and optionally
/// `protocol`, default 4).
pub fn axon(axon: &Bound<'_, PyAny>) -> PyResult<QuicAxonInfo> {
    let py = axon.py();
    let (hotkey, ip, port) = (
        intern!(py, "hotkey"),
        intern!(py, "ip"),
        intern!(py, "port"),
    );
    let looks_like_axon = axon.is_instance_of::<PyDict>()
        || (axon.hasattr(hotkey)? && axon.hasattr(ip)? && axon.hasattr(port)?);
    if !looks_like_axon {
        return Err(PyTypeError::new_err(format!(
            "an axon must be a dict or an object with hotkey, ip and port attributes, not '{}'",
            axon.get_type().name()?
        )));
    }
    let hotkey: String = required(axon, hotkey)?.extract()?;
    let ip: String = required(axon, ip)?.extract()?;
    let port: u16 = required(axon, port)?.extract()?;
    let protocol: u8 = match field(axon, intern!(py, "protocol"))? {
        Some(p) if !p.is_none() => p.extract()?,
        _ => 4,
    };
    Ok(QuicAxonInfo::new(hotkey, ip, port, protocol))
}

/// A list (or any iterable) of axons.
pub fn axons(miners: &Bound<'_, PyAny>) -> PyResult<Vec<QuicAxonInfo>> {
    if miners.is_instance_of::<PyString>() || miners.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(
            "miners must be a list of axons (dicts or objects with hotkey, ip, port)",
        ));
    }
    miners.try_iter()?.map(|m| axon(&m?)).collect()
}

/// A `{"synapse_type": str, "data": dict}` request; `data` may be missing (empty map).
pub fn request(request: &Bound<'_, PyAny>) -> PyResult<QuicRequest> {
    let request = request.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "request must be a dict with 'synapse_type' and 'data', not '{}'",
            request
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let py = request.py();
    let synapse: String = request
        .get_item(intern!(py, "synapse_type"))?
        .ok_or_else(|| PyKeyError::new_err("Missing 'synapse_type' field"))?
        .extract()?;
    let data = match request.get_item(intern!(py, "data"))? {
        Some(d) => dict_to_datamap(&d)?,
        None => Default::default(),
    };
    Ok(QuicRequest::new(synapse, data))
}

/// `timeout_secs`: `None`, or a finite positive number of seconds up to ten years.
pub fn timeout(timeout_secs: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout_secs {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS => {
            Ok(Some(Duration::from_secs_f64(t)))
        }
        Some(t) => Err(config_error(format!(
            "config error: timeout_secs must be a finite positive number, got {t}"
        ))),
    }
}

/// The identity of a bittensor wallet's hotkey (`~` in `wallet_path` expanded as Python
/// does), with btlightning's error message.
pub fn wallet_identity(
    py: Python<'_>,
    wallet_name: &str,
    wallet_path: &str,
    hotkey_name: &str,
) -> PyResult<lightning_tokio::Identity> {
    let path: String = py
        .import("os.path")?
        .call_method1("expanduser", (wallet_path,))?
        .extract()?;
    lightning_tokio::Identity::from_wallet(std::path::Path::new(&path), wallet_name, hotkey_name)
        .map_err(|e| {
            config_error(format!(
                "config error: failed to load hotkey from wallet: {e}"
            ))
        })
}

/// The `congestion` argument of a client or server: `"cubic"` (the default, also for
/// `None`), `"newreno"` or `"bbr"`; anything else is a `ValueError` that names them.
pub fn congestion(name: Option<&str>) -> PyResult<CongestionControl> {
    match name {
        None => Ok(CongestionControl::default()),
        Some(name) => name
            .parse()
            .map_err(|e: String| config_error(format!("config error: {e}"))),
    }
}

/// The `max_udp_payload` argument of a client or server as the `u16` the transport
/// options hold (`None` keeps the default, 1,452). The range itself (1,200 to 65,527) is
/// checked with the rest of the configuration (`TransportOptions::validate`); a Python
/// int that no `u16` holds (negative, or above 65,535) is refused here with the same
/// `ValueError` instead of PyO3's `OverflowError`.
pub fn max_udp_payload(bytes: Option<i64>) -> PyResult<Option<u16>> {
    bytes
        .map(|n| {
            u16::try_from(n).map_err(|_| {
                config_error(format!(
                    "config error: max_udp_payload must be between 1200 and {} bytes, not {n}",
                    lightning_tokio::MAX_UDP_PAYLOAD
                ))
            })
        })
        .transpose()
}
