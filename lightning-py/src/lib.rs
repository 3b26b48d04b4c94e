//! # lightning-py
//!
//! The native half of the Python package `lightning-quic` (import `lightning_quic`), a
//! drop-in for btlightning's Python API on Lightning's Rust transport. The typed Python
//! façade in `python/lightning_quic` wraps the classes defined here.
//!
//! Rules every module follows: no Python on an endpoint task (Python handlers run on
//! `executor` threads), the GIL released around every wait (`runtime::wait`, which also
//! lets Ctrl-C through), and bad input from a caller or a peer is a Python exception,
//! never a panic.

#![deny(missing_docs)]

mod args;
mod bridge;
mod client;
mod context;
mod convert;
mod coro;
mod errors;
mod executor;
mod handlers;
mod logging;
mod metrics;
mod offload;
mod origin;
mod runtime;
mod server;
mod stream;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// Encodes a dict as a MessagePack map (the wire form of `data`); for tests and tools.
#[pyfunction]
fn encode_data<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let map = convert::dict_to_datamap(data)?;
    Ok(PyBytes::new(py, map.raw()))
}

/// Decodes a MessagePack map into a dict; for tests and tools.
#[pyfunction]
fn decode_data<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    convert::bytes_to_dict(py, raw)
}

/// The SS58 hotkey of the sr25519 key derived from a 32-byte seed.
#[pyfunction]
fn hotkey_from_seed(seed: Vec<u8>) -> PyResult<String> {
    let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| {
        errors::config_error(format!(
            "config error: keypair seed must be 32 bytes, got {}",
            seed.len()
        ))
    })?;
    Ok(lightning_tokio::Keypair::from_seed(&seed).hotkey())
}

/// An sr25519 signature (context `substrate`) of `message` by the key from a 32-byte
/// seed: what a signer passed to `set_python_signer` must return.
#[pyfunction]
fn sign_with_seed<'py>(
    py: Python<'py>,
    seed: Vec<u8>,
    message: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| {
        errors::config_error(format!(
            "config error: keypair seed must be 32 bytes, got {}",
            seed.len()
        ))
    })?;
    let signature = lightning_tokio::Keypair::from_seed(&seed).sign(message);
    Ok(PyBytes::new(py, &signature))
}

/// The native module `lightning_quic._native`.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::PyClient>()?;
    m.add_class::<server::PyServer>()?;
    m.add_class::<stream::StreamingResponse>()?;
    m.add_class::<context::PyRequestContext>()?;
    m.add_class::<bridge::LoopBridge>()?;
    m.add_class::<bridge::Ticket>()?;
    m.add_class::<coro::Responder>()?;
    m.add_class::<coro::StreamSink>()?;
    m.add_class::<offload::ThreadPool>()?;
    m.add_function(wrap_pyfunction!(context::current_request, m)?)?;
    m.add_function(wrap_pyfunction!(encode_data, m)?)?;
    m.add_function(wrap_pyfunction!(hotkey_from_seed, m)?)?;
    m.add_function(wrap_pyfunction!(sign_with_seed, m)?)?;
    m.add_function(wrap_pyfunction!(decode_data, m)?)?;
    m.add("MAX_NESTING", convert::MAX_NESTING)?;
    origin::register_fork_hook(m.py())?;
    Ok(())
}
