//! Rust errors as Python exceptions.
//!
//! The classes live in `lightning_quic/errors.py` and subclass the built-ins btlightning
//! raises (`ConnectionError`, `ValueError`, `RuntimeError`), so `except` clauses written
//! for btlightning keep working. The message is our `Display`, `"<kind> error: <detail>"`.

use lightning_tokio::LightningError;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// The exception class `name` from `lightning_quic.errors`.
fn class<'py>(py: Python<'py>, name: &str) -> Option<Bound<'py, PyAny>> {
    py.import("lightning_quic.errors")
        .and_then(|m| m.getattr(name))
        .ok()
}

/// An exception of class `name` (falling back to the built-in `fallback` if the Python
/// side of the package cannot be imported, e.g. during interpreter shutdown).
pub fn raise(name: &str, message: String, fallback: fn(String) -> PyErr) -> PyErr {
    Python::attach(|py| match class(py, name) {
        Some(cls) => match cls.call1((message.clone(),)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(_) => fallback(message),
        },
        None => fallback(message),
    })
}

/// `LightningConfigError` (a `ValueError`).
pub fn config_error(message: impl Into<String>) -> PyErr {
    raise("LightningConfigError", message.into(), |m| {
        PyValueError::new_err(m)
    })
}

/// `LightningConnectionError` (a `ConnectionError`).
pub fn connection_error(message: impl Into<String>) -> PyErr {
    raise("LightningConnectionError", message.into(), |m| {
        PyConnectionError::new_err(m)
    })
}

/// `StreamError` (a `RuntimeError`).
pub fn stream_error(message: impl Into<String>) -> PyErr {
    raise("StreamError", message.into(), |m| {
        PyRuntimeError::new_err(m)
    })
}

/// `SigningError` (a `RuntimeError`).
pub fn signing_error(message: impl Into<String>) -> PyErr {
    raise("SigningError", message.into(), |m| {
        PyRuntimeError::new_err(m)
    })
}

/// The "endpoint not initialized" error of a client used before `initialize_connections`.
pub fn not_initialized() -> PyErr {
    connection_error("connection error: QUIC endpoint not initialized")
}

/// Maps a driver error onto the hierarchy, by variant.
///
/// `SigningError` is not among the outcomes: our own signer's failures arrive as
/// handshake errors (`HandshakeCause::Refused(HandshakeError::Signing(_))`, raised as
/// `HandshakeError` like any other refused handshake), and the missing-signer case is
/// raised by the callers before the driver is reached. No local failure is a signing
/// failure, so a `Local` error is a connection error whatever its OS text says.
pub fn to_py(e: LightningError) -> PyErr {
    let message = e.to_string();
    match e {
        // The caller's own input, refused before anything is sent.
        LightningError::Config(_)
        | LightningError::InvalidHotkey { .. }
        | LightningError::RequestTooLarge { .. } => config_error(message),
        LightningError::Handshake(_) => {
            raise("HandshakeError", message, PyConnectionError::new_err)
        }
        LightningError::Timeout(_) => raise("QueryTimeout", message, PyConnectionError::new_err),
        LightningError::Stream(_) | LightningError::Remote(_) => stream_error(message),
        _ => connection_error(message),
    }
}
