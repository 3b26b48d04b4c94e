//! Python dict <-> MessagePack, straight between Python objects and bytes.
//!
//! Encoding dispatches on the exact type first (the common case costs one pointer
//! comparison per value, and no Python exception is raised and discarded on the way), then
//! on subclasses and the numeric protocols (`__index__`, `__float__`: numpy scalars,
//! `IntEnum`, `Decimal`). Anything else is a `TypeError` naming where in the data it sits:
//! there is deliberately no `str(value)` fallback, which would turn a numpy array into the
//! text `"[0.1 0.2]"` on the wire. Nesting is bounded, so a self-referential structure is
//! an error instead of a stack overflow.
//!
//! Decoding reads the bytes once and builds dicts in wire order.

use bytes::Bytes;
use lightning_tokio::DataMap;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

/// Containers nested below the top-level map, at most. Inside what a peer accepts (1022
/// levels within a message) with room to spare; anything deeper is almost surely a cycle.
pub const MAX_NESTING: usize = 1000;

/// The prefix btlightning gives every value that cannot be encoded, kept so that code
/// matching on it keeps working.
const ENCODE_ERROR: &str = "Failed to convert Python value to msgpack";

/// Where a value sits inside the data, printed only when something fails.
#[derive(Clone, Copy)]
enum Path<'a, 'py> {
    Root,
    Key(&'a Path<'a, 'py>, &'a Bound<'py, PyAny>),
    Index(&'a Path<'a, 'py>, usize),
}

impl Path<'_, '_> {
    fn render(&self) -> String {
        match self {
            Path::Root => "data".to_string(),
            Path::Key(parent, key) => {
                let key = key
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| "<key>".into());
                format!("{}[{key}]", parent.render())
            }
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn value_error(path: &Path<'_, '_>, what: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{ENCODE_ERROR}: {what} at {}", path.render()))
}

/// Encodes `dict` (top-level keys must be `str`) into a validated [`DataMap`].
pub fn dict_to_datamap(dict: &Bound<'_, PyAny>) -> PyResult<DataMap> {
    let dict = dict.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!("'data' must be a dict, not '{}'", type_name(dict)))
    })?;
    let mut out = Vec::with_capacity(64);
    encode_map(&mut out, dict, &Path::Root, 0, true)?;
    DataMap::from_raw(Bytes::from(out))
        .map_err(|e| PyValueError::new_err(format!("{ENCODE_ERROR}: {e}")))
}

/// Encodes one map; `top` demands `str` keys (the wire requires them at the top level).
fn encode_map<'py>(
    out: &mut Vec<u8>,
    dict: &Bound<'py, PyDict>,
    path: &Path<'_, 'py>,
    depth: usize,
    top: bool,
) -> PyResult<()> {
    let len = u32::try_from(dict.len()).map_err(|_| value_error(path, "dict too large"))?;
    write(path, rmp::encode::write_map_len(out, len))?;
    for (key, value) in dict.iter() {
        if top && !key.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!(
                "data keys must be str, got '{}' ({}) in {}",
                type_name(&key),
                key.repr().map(|r| r.to_string()).unwrap_or_default(),
                path.render()
            )));
        }
        encode_value(out, &key, path, depth)?;
        encode_value(out, &value, &Path::Key(path, &key), depth)?;
    }
    Ok(())
}

fn write<T, E: std::fmt::Display>(path: &Path<'_, '_>, r: Result<T, E>) -> PyResult<T> {
    r.map_err(|e| value_error(path, e))
}

fn encode_int(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, path: &Path<'_, '_>) -> PyResult<()> {
    if let Ok(v) = value.extract::<i64>() {
        write(path, rmp::encode::write_sint(out, v))?;
    } else if let Ok(v) = value.extract::<u64>() {
        write(path, rmp::encode::write_uint(out, v))?;
    } else {
        // A ValueError, as btlightning raises: callers catch that.
        return Err(PyValueError::new_err(format!(
            "{ENCODE_ERROR}: integer too large for msgpack representation (must fit i64 or u64) at {}",
            path.render()
        )));
    }
    Ok(())
}

fn encode_str(out: &mut Vec<u8>, value: &Bound<'_, PyString>, path: &Path<'_, '_>) -> PyResult<()> {
    // A lone surrogate has no UTF-8 form.
    let s = value.to_str().map_err(|e| value_error(path, e))?;
    write(path, rmp::encode::write_str(out, s))
}

fn encode_bin(out: &mut Vec<u8>, bytes: &[u8], path: &Path<'_, '_>) -> PyResult<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| value_error(path, "bytes too long"))?;
    write(path, rmp::encode::write_bin_len(out, len))?;
    out.extend_from_slice(bytes);
    Ok(())
}

fn encode_seq<'py>(
    out: &mut Vec<u8>,
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    path: &Path<'_, 'py>,
    depth: usize,
) -> PyResult<()> {
    let len = u32::try_from(items.len()).map_err(|_| value_error(path, "sequence too long"))?;
    write(path, rmp::encode::write_array_len(out, len))?;
    for (i, item) in items.enumerate() {
        encode_value(out, &item, &Path::Index(path, i), depth)?;
    }
    Ok(())
}

/// Whether `value` is a `numpy.bool_` (numpy's bool has no `__index__`, and its
/// `__float__` would make it 1.0).
fn is_numpy_bool(value: &Bound<'_, PyAny>) -> bool {
    let ty = value.get_type();
    let module = ty.module().map(|m| m.to_string()).unwrap_or_default();
    let name = ty.name().map(|n| n.to_string()).unwrap_or_default();
    module == "numpy" && (name == "bool_" || name == "bool")
}

/// Encodes any supported value; `depth` counts the containers around it.
fn encode_value<'py>(
    out: &mut Vec<u8>,
    value: &Bound<'py, PyAny>,
    path: &Path<'_, 'py>,
    depth: usize,
) -> PyResult<()> {
    // Exact types first: one type comparison each, no exceptions raised on the way.
    if value.is_none() {
        rmp::encode::write_nil(out).map_err(|e| value_error(path, e))?;
        return Ok(());
    }
    if let Ok(b) = value.cast_exact::<PyBool>() {
        return write(path, rmp::encode::write_bool(out, b.is_true()));
    }
    if let Ok(s) = value.cast_exact::<PyString>() {
        return encode_str(out, s, path);
    }
    if value.is_exact_instance_of::<PyInt>() {
        return encode_int(out, value, path);
    }
    if let Ok(f) = value.cast_exact::<PyFloat>() {
        return write(path, rmp::encode::write_f64(out, f.value()));
    }
    if let Ok(b) = value.cast_exact::<PyBytes>() {
        return encode_bin(out, b.as_bytes(), path);
    }
    let container = value.is_exact_instance_of::<PyDict>()
        || value.is_exact_instance_of::<PyList>()
        || value.is_exact_instance_of::<PyTuple>()
        || value.is_instance_of::<PyDict>()
        || value.is_instance_of::<PyList>()
        || value.is_instance_of::<PyTuple>();
    if container && depth >= MAX_NESTING {
        return Err(value_error(
            path,
            format_args!(
                "nesting too deep (more than {MAX_NESTING} levels; is the data self-referential?)"
            ),
        ));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        return encode_map(out, d, path, depth + 1, false);
    }
    if let Ok(l) = value.cast::<PyList>() {
        return encode_seq(out, l.iter(), path, depth + 1);
    }
    if let Ok(t) = value.cast::<PyTuple>() {
        return encode_seq(out, t.iter(), path, depth + 1);
    }
    // Subclasses and look-alikes.
    if let Ok(s) = value.cast::<PyString>() {
        return encode_str(out, s, path);
    }
    if value.is_instance_of::<PyInt>() {
        return encode_int(out, value, path);
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return write(path, rmp::encode::write_f64(out, f.value()));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return encode_bin(out, b.as_bytes(), path);
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return encode_bin(out, &b.to_vec(), path);
    }
    if value.is_instance_of::<PyMemoryView>() {
        let copy = value.call_method0(pyo3::intern!(value.py(), "tobytes"))?;
        let bytes = copy
            .cast::<PyBytes>()
            .map_err(|_| value_error(path, "memoryview.tobytes() did not return bytes"))?;
        return encode_bin(out, bytes.as_bytes(), path);
    }
    if is_numpy_bool(value) {
        return write(path, rmp::encode::write_bool(out, value.is_truthy()?));
    }
    let ty = value.get_type();
    if ty.hasattr(pyo3::intern!(value.py(), "__index__"))? {
        let int = value.call_method0(pyo3::intern!(value.py(), "__index__"))?;
        return encode_int(out, &int, path);
    }
    if ty.hasattr(pyo3::intern!(value.py(), "__float__"))? {
        let f: f64 = value
            .call_method0(pyo3::intern!(value.py(), "__float__"))?
            .extract()?;
        return write(path, rmp::encode::write_f64(out, f));
    }
    Err(PyTypeError::new_err(format!(
        "cannot encode a value of type '{}' at {} (supported: None, bool, int, float, str, bytes, \
         bytearray, memoryview, list, tuple, dict, and objects with __index__ or __float__)",
        type_name(value),
        path.render()
    )))
}

// ----- decoding -----------------------------------------------------------------------------

/// A cursor over MessagePack bytes. Every read is bounds-checked: peer data never panics.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed(what: &str) -> PyErr {
    PyValueError::new_err(format!("malformed MessagePack data: {what}"))
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| malformed("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> PyResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> PyResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len(&mut self, width: usize) -> PyResult<usize> {
        Ok(match width {
            1 => usize::from(self.u8()?),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }
}

/// Decodes a data map into a `dict`, keys and values in wire order.
pub fn datamap_to_dict<'py>(py: Python<'py>, data: &DataMap) -> PyResult<Bound<'py, PyDict>> {
    bytes_to_dict(py, data.raw())
}

/// Decodes one encoded map into a `dict`; used for data maps and in tests.
pub fn bytes_to_dict<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let mut c = Cursor { buf: raw, pos: 0 };
    let value = decode_value(py, &mut c, 0)?;
    if c.pos != raw.len() {
        return Err(malformed("trailing bytes"));
    }
    value
        .cast_into::<PyDict>()
        .map_err(|_| malformed("the top level is not a map"))
}

fn decode_str<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyAny> {
    // Invalid UTF-8 comes back as bytes, as btlightning does.
    match std::str::from_utf8(bytes) {
        Ok(s) => PyString::new(py, s).into_any(),
        Err(_) => PyBytes::new(py, bytes).into_any(),
    }
}

fn decode_value<'py>(
    py: Python<'py>,
    c: &mut Cursor<'_>,
    depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if depth > MAX_NESTING + 24 {
        return Err(malformed("nesting too deep"));
    }
    let marker = c.u8()?;
    let int = |v: i64| -> PyResult<Bound<'py, PyAny>> { Ok(v.into_pyobject(py)?.into_any()) };
    match marker {
        0x00..=0x7f => int(i64::from(marker)),
        0xe0..=0xff => int(i64::from(marker as i8)),
        0x80..=0x8f => decode_map(py, c, usize::from(marker & 0x0f), depth),
        0x90..=0x9f => decode_array(py, c, usize::from(marker & 0x0f), depth),
        0xa0..=0xbf => {
            let bytes = c.take(usize::from(marker & 0x1f))?;
            Ok(decode_str(py, bytes))
        }
        0xc0 => Ok(py.None().into_bound(py)),
        0xc2 => Ok(PyBool::new(py, false).to_owned().into_any()),
        0xc3 => Ok(PyBool::new(py, true).to_owned().into_any()),
        0xc4..=0xc6 => {
            let n = c.len(1 << (marker - 0xc4))?;
            Ok(PyBytes::new(py, c.take(n)?).into_any())
        }
        0xc7..=0xc9 => {
            // ext: the type tag is dropped and the payload returned as bytes (btlightning).
            let n = c.len(1 << (marker - 0xc7))?;
            c.u8()?;
            Ok(PyBytes::new(py, c.take(n)?).into_any())
        }
        0xca => Ok(PyFloat::new(py, f64::from(f32::from_be_bytes(c.be()?))).into_any()),
        0xcb => Ok(PyFloat::new(py, f64::from_be_bytes(c.be()?)).into_any()),
        0xcc => int(i64::from(c.u8()?)),
        0xcd => int(i64::from(u16::from_be_bytes(c.be()?))),
        0xce => int(i64::from(u32::from_be_bytes(c.be()?))),
        0xcf => Ok(u64::from_be_bytes(c.be()?).into_pyobject(py)?.into_any()),
        0xd0 => int(i64::from(c.u8()? as i8)),
        0xd1 => int(i64::from(i16::from_be_bytes(c.be()?))),
        0xd2 => int(i64::from(i32::from_be_bytes(c.be()?))),
        0xd3 => int(i64::from_be_bytes(c.be()?)),
        0xd4..=0xd8 => {
            let n = 1usize << (marker - 0xd4);
            c.u8()?;
            Ok(PyBytes::new(py, c.take(n)?).into_any())
        }
        0xd9..=0xdb => {
            let n = c.len(1 << (marker - 0xd9))?;
            Ok(decode_str(py, c.take(n)?))
        }
        0xdc | 0xdd => {
            let n = c.len(if marker == 0xdc { 2 } else { 4 })?;
            decode_array(py, c, n, depth)
        }
        0xde | 0xdf => {
            let n = c.len(if marker == 0xde { 2 } else { 4 })?;
            decode_map(py, c, n, depth)
        }
        _ => Err(malformed("reserved marker 0xc1")),
    }
}

fn decode_array<'py>(
    py: Python<'py>,
    c: &mut Cursor<'_>,
    n: usize,
    depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let list = PyList::empty(py);
    for _ in 0..n {
        list.append(decode_value(py, c, depth + 1)?)?;
    }
    Ok(list.into_any())
}

fn decode_map<'py>(
    py: Python<'py>,
    c: &mut Cursor<'_>,
    n: usize,
    depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let dict = PyDict::new(py);
    for _ in 0..n {
        let key = decode_value(py, c, depth + 1)?;
        let value = decode_value(py, c, depth + 1)?;
        // A list or map key is unhashable: a TypeError, as with btlightning.
        dict.set_item(key, value)?;
    }
    Ok(dict.into_any())
}
