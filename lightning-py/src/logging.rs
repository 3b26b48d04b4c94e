//! Messages to Python's `logging` (logger `lightning_quic`), from threads that may take the
//! GIL: never from an endpoint task.

use pyo3::prelude::*;

fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?
        .call_method1("getLogger", ("lightning_quic",))
}

/// Logs a warning. A failure to log (interpreter shutting down) is ignored.
pub fn log_warning(message: &str) {
    Python::attach(|py| {
        if let Ok(logger) = logger(py) {
            let _ = logger.call_method1("warning", ("%s", message));
        }
    });
}

/// Logs an error, with the exception's traceback when there is one.
pub fn log_error(py: Python<'_>, message: &str, error: Option<PyErr>) {
    let Ok(logger) = logger(py) else { return };
    let kwargs = pyo3::types::PyDict::new(py);
    if let Some(error) = error {
        // The exception instance carries its traceback once `into_value` has attached it.
        let _ = kwargs.set_item("exc_info", error.into_value(py));
    }
    let _ = logger.call_method("error", ("%s", message), Some(&kwargs));
}
