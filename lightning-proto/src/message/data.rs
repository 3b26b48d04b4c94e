//! The `data` map of requests and responses (PROTOCOL §4.4), kept as the
//! raw MessagePack bytes it arrived in.
//!
//! A server that routes on `synapse_type` and hands `data` to an application
//! that may never look inside should not pay for building a tree of dynamic
//! values, and echoing a request's data back should not copy it. So the map
//! is validated once (well formed, string keys, depth) and then held as a
//! slice of the received payload; values are decoded only on demand.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bytes::Bytes;
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{at, named, DecodeError};
use crate::msgpack::{write, Int, Item, Reader, MAX_DEPTH};

/// Nesting budget left when a message's `data` map starts: the enclosing
/// message array (or map) has used one unit.
const DATA_DEPTH: u16 = MAX_DEPTH - 1;

/// Why typed or dynamic data could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataError {
    /// The value's `Serialize` implementation failed.
    Serialize(String),
    /// The map does not deserialize into the requested type.
    Deserialize(String),
    /// The value did not serialize to a map (the top level must be one).
    NotAMap,
    /// A map key that is not UTF-8.
    NonUtf8Key,
    /// A string, byte string or container longer than MessagePack's
    /// `u32::MAX` limit.
    TooLong {
        /// The length.
        len: usize,
    },
    /// Nesting deeper than a peer accepts inside a message (1022 levels,
    /// the map itself included).
    TooDeep,
    /// The raw bytes are not a valid data map.
    Malformed(DecodeError),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serialize(msg) | Self::Deserialize(msg) => f.write_str(msg),
            // The reference's wording for these two.
            Self::NotAMap => f.write_str("expected map from serialized struct"),
            Self::NonUtf8Key => f.write_str("non-UTF8 map key"),
            Self::TooLong { len } => {
                write!(f, "{len} bytes or elements exceed the MessagePack limit")
            }
            Self::TooDeep => f.write_str("depth limit exceeded"),
            Self::Malformed(err) => write!(f, "malformed data map: {err}"),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Malformed(err) => Some(err),
            _ => None,
        }
    }
}

impl From<DecodeError> for DataError {
    fn from(err: DecodeError) -> Self {
        Self::Malformed(err)
    }
}

/// A MessagePack map with string keys and arbitrary values, held as its
/// encoded bytes.
///
/// Invariant: `raw` is exactly one well-formed map whose top-level keys are
/// `str` (or `bin`) holding UTF-8, nested no deeper than a reference peer
/// accepts inside a message. Every constructor checks or guarantees it.
///
/// Equality compares the raw bytes. Two maps with the same entries in a
/// different order (or with different but equivalent encodings) are
/// therefore *not* equal; compare [`to_values`](Self::to_values) for that.
#[derive(Clone, PartialEq, Eq)]
pub struct DataMap {
    raw: Bytes,
    len: u32,
}

impl Default for DataMap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DataMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataMap")
            .field("entries", &self.len)
            .field("bytes", &self.raw.len())
            .finish()
    }
}

/// Checks a data map at the reader's position and returns its entry count.
/// `depth` is the nesting budget before the map.
fn validate_map(r: &mut Reader<'_>, depth: u16, field: &'static str) -> Result<u32, DecodeError> {
    let len = r.read_map_len().map_err(at(field))?;
    if depth <= 1 {
        return Err(DecodeError::DepthLimitExceeded { field });
    }
    for _ in 0..len {
        let (key, _) = r.read_str_or_bin("str key").map_err(at(field))?;
        if std::str::from_utf8(key).is_err() {
            return Err(DecodeError::InvalidUtf8 { field });
        }
        r.skip_value(depth - 1).map_err(at(field))?;
    }
    Ok(len)
}

impl DataMap {
    /// The empty map (`0x80`).
    pub fn new() -> Self {
        Self {
            raw: Bytes::from_static(&[0x80]),
            len: 0,
        }
    }

    /// Wraps encoded bytes after checking that they are exactly one map a
    /// peer would accept as `data`. No copy is made.
    pub fn from_raw(raw: Bytes) -> Result<Self, DecodeError> {
        const FIELD: &str = "data";
        let mut r = Reader::new(&raw);
        let len = validate_map(&mut r, DATA_DEPTH, FIELD)?;
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                field: FIELD,
                count: r.remaining(),
            });
        }
        Ok(Self { raw, len })
    }

    /// Reads the map at the reader's position as a slice of `payload` (the
    /// buffer the reader runs over).
    pub(super) fn read(
        r: &mut Reader<'_>,
        payload: &Bytes,
        depth: u16,
        field: &'static str,
    ) -> Result<Self, DecodeError> {
        let start = r.position();
        let len = validate_map(r, depth, field)?;
        Ok(Self {
            raw: payload.slice(start..r.position()),
            len,
        })
    }

    /// The encoded map.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The encoded map, by value.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Number of entries as encoded (duplicate keys counted each time).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates over the entries as (key, position of the value in `raw`).
    fn entries(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.entry_spans().map(|(key, _, value_at)| (key, value_at))
    }

    /// Iterates over the entries as (key, byte range of the whole entry in `raw`, position
    /// of its value).
    fn entry_spans(&self) -> impl Iterator<Item = (&str, std::ops::Range<usize>, usize)> + '_ {
        let mut r = Reader::new(&self.raw);
        // The invariant makes every read below succeed; a failure just ends the iteration.
        let mut left = r.read_map_len().unwrap_or(0);
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let start = r.position();
            let (key, _) = r.read_str_or_bin("str key").ok()?;
            let key = std::str::from_utf8(key).ok()?;
            let value_at = r.position();
            r.skip_value(MAX_DEPTH).ok()?;
            Some((key, start..r.position(), value_at))
        })
    }

    /// The map with duplicate keys resolved as the reference resolves them (last value
    /// wins, first position kept), built by copying encoded bytes: no value is decoded,
    /// so the cost is linear in the map's size whatever its values hold.
    fn dedup_raw(&self) -> Result<Self, DataError> {
        // Per distinct key, in first-seen order: the first entry's key bytes and the last
        // entry's value bytes.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut chosen: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
        for (key, span, value_at) in self.entry_spans() {
            let value = value_at..span.end;
            match index.get(key) {
                Some(&i) => chosen[i].1 = value,
                None => {
                    index.insert(key, chosen.len());
                    chosen.push((span.start..value_at, value));
                }
            }
        }
        let size: usize = chosen.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(size + 5);
        write::map_len(&mut out, chosen.len()).map_err(too_long)?;
        for (key, value) in &chosen {
            out.extend_from_slice(self.raw.get(key.clone()).unwrap_or_default());
            out.extend_from_slice(self.raw.get(value.clone()).unwrap_or_default());
        }
        let len =
            u32::try_from(chosen.len()).map_err(|_| DataError::TooLong { len: chosen.len() })?;
        Ok(Self {
            raw: Bytes::from(out),
            len,
        })
    }

    fn value_at(&self, pos: usize) -> Result<Value, DataError> {
        let rest = self.raw.get(pos..).unwrap_or_default();
        read_value(&mut Reader::new(rest), MAX_DEPTH)
            .map_err(|e| DataError::Malformed(DecodeError::from_reader(e, "data")))
    }

    /// The value under `key`, decoded. Only that value is decoded; if the
    /// key occurs more than once the last occurrence wins, as in the
    /// reference's hash map.
    pub fn get(&self, key: &str) -> Option<Value> {
        let pos = self
            .entries()
            .filter(|(k, _)| *k == key)
            .map(|(_, pos)| pos)
            .last()?;
        self.value_at(pos).ok()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries().any(|(k, _)| k == key)
    }

    /// The keys, in encoded order (duplicates included).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries().map(|(k, _)| k)
    }

    /// Entries with duplicates resolved (last value wins, first position
    /// kept).
    fn dedup_entries(&self) -> Result<Vec<(String, Value)>, DataError> {
        // Positions first, so that a value replaced by a later duplicate is never decoded.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut positions: Vec<(&str, usize)> = Vec::with_capacity(self.len().min(1024));
        for (key, pos) in self.entries() {
            match index.get(key) {
                Some(&i) => positions[i].1 = pos,
                None => {
                    index.insert(key, positions.len());
                    positions.push((key, pos));
                }
            }
        }
        positions
            .into_iter()
            .map(|(key, pos)| Ok((key.to_owned(), self.value_at(pos)?)))
            .collect()
    }

    /// All entries as dynamic values (what the reference hands to
    /// handlers). Strings that are not UTF-8 become `Binary`, as they do in
    /// the reference.
    pub fn to_values(&self) -> Result<HashMap<String, Value>, DataError> {
        Ok(self.dedup_entries()?.into_iter().collect())
    }

    /// Builds a map from entries. A later duplicate key replaces an earlier
    /// one. Fails only on lengths above `u32::MAX` or on nesting a peer
    /// would refuse.
    pub fn from_values<I>(entries: I) -> Result<Self, DataError>
    where
        I: IntoIterator<Item = (String, Value)>,
    {
        let mut deduped: Vec<(String, Value)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (key, value) in entries {
            match index.get(&key) {
                Some(&i) => deduped[i].1 = value,
                None => {
                    index.insert(key.clone(), deduped.len());
                    deduped.push((key, value));
                }
            }
        }
        let len =
            u32::try_from(deduped.len()).map_err(|_| DataError::TooLong { len: deduped.len() })?;
        let mut out = Vec::new();
        write::map_len(&mut out, deduped.len()).map_err(too_long)?;
        if DATA_DEPTH <= 1 {
            return Err(DataError::TooDeep);
        }
        for (key, value) in &deduped {
            write::str(&mut out, key).map_err(too_long)?;
            write_value(&mut out, value, DATA_DEPTH - 1)?;
        }
        Ok(Self {
            raw: Bytes::from(out),
            len,
        })
    }

    /// Serializes a typed value the way the reference's typed helpers do
    /// (`QuicRequest::from_typed`): struct fields become entries keyed by
    /// name (nested structs too), `None` and units become nil, newtypes
    /// their inner value, unit enum variants their index, other variants a
    /// one-entry map `{index: inner}`. The top level must be a map; its
    /// non-string keys are turned into their display form.
    pub fn from_typed<T: Serialize + ?Sized>(value: &T) -> Result<Self, DataError> {
        let tree = value
            .serialize(named::Named)
            .map_err(|e| DataError::Serialize(e.to_string()))?;
        let Value::Map(entries) = tree else {
            return Err(DataError::NotAMap);
        };
        let mut pairs = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let key = match key {
                Value::String(s) => s.into_str().ok_or(DataError::NonUtf8Key)?,
                other => other.to_string(),
            };
            pairs.push((key, value));
        }
        Self::from_values(pairs)
    }

    /// Deserializes the map into a typed value, reading struct fields by
    /// name, as the reference's typed handlers and
    /// `QuicResponse::deserialize_data` do (duplicate keys resolved first,
    /// last wins; human-readable representations, like the reference).
    ///
    /// Enums and unit structs are read in the convention
    /// [`from_typed`](Self::from_typed) writes (variant index, `{index:
    /// inner}`, nil), so typed data round-trips.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, DataError> {
        let mut seen = HashSet::with_capacity(self.len().min(1024));
        let deduped;
        let bytes: &[u8] = if self.keys().all(|k| seen.insert(k)) {
            &self.raw
        } else {
            deduped = self.dedup_raw()?;
            deduped.raw()
        };
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
        T::deserialize(&mut de).map_err(|e| DataError::Deserialize(e.to_string()))
    }
}

impl TryFrom<HashMap<String, Value>> for DataMap {
    type Error = DataError;

    fn try_from(map: HashMap<String, Value>) -> Result<Self, DataError> {
        Self::from_values(map)
    }
}

impl TryFrom<Bytes> for DataMap {
    type Error = DecodeError;

    fn try_from(raw: Bytes) -> Result<Self, DecodeError> {
        Self::from_raw(raw)
    }
}

fn too_long(write::TooLong(len): write::TooLong) -> DataError {
    DataError::TooLong { len }
}

/// Encodes a dynamic value as the reference does (rmp-serde over rmpv's
/// `Serialize`): shortest integers, `str` for UTF-8 strings and `bin` for
/// strings that are not, `ext` with its tag. `depth` is the nesting budget
/// before this value; recursion is bounded by it.
fn write_value(out: &mut Vec<u8>, value: &Value, depth: u16) -> Result<(), DataError> {
    let enter = |depth: u16| {
        if depth <= 1 {
            Err(DataError::TooDeep)
        } else {
            Ok(depth - 1)
        }
    };
    match value {
        Value::Nil => write::nil(out),
        Value::Boolean(b) => write::boolean(out, *b),
        Value::Integer(n) => {
            if let Some(u) = n.as_u64() {
                write::uint(out, u);
            } else if let Some(i) = n.as_i64() {
                write::sint(out, i);
            }
        }
        Value::F32(v) => write::f32(out, *v),
        Value::F64(v) => write::f64(out, *v),
        Value::String(s) => match s.as_str() {
            Some(s) => write::str(out, s).map_err(too_long)?,
            None => write::bin(out, s.as_bytes()).map_err(too_long)?,
        },
        Value::Binary(b) => write::bin(out, b).map_err(too_long)?,
        Value::Array(items) => {
            let inner = enter(depth)?;
            write::array_len(out, items.len()).map_err(too_long)?;
            for item in items {
                write_value(out, item, inner)?;
            }
        }
        Value::Map(entries) => {
            let inner = enter(depth)?;
            write::map_len(out, entries.len()).map_err(too_long)?;
            for (k, v) in entries {
                write_value(out, k, inner)?;
                write_value(out, v, inner)?;
            }
        }
        Value::Ext(tag, data) => {
            enter(depth)?;
            write::ext(out, *tag, data).map_err(too_long)?;
        }
    }
    Ok(())
}

/// Decodes one value into the dynamic form the reference produces
/// (rmp-serde into rmpv): invalid-UTF-8 strings become `Binary`, signed
/// encodings of non-negative numbers become ordinary integers. Recursion is
/// bounded by `depth`.
fn read_value(r: &mut Reader<'_>, depth: u16) -> crate::msgpack::Result<Value> {
    use crate::msgpack::Error;
    Ok(match r.read_item()? {
        Item::Nil => Value::Nil,
        Item::Bool(b) => Value::Boolean(b),
        Item::Int(Int::Unsigned(u)) => Value::from(u),
        Item::Int(Int::Signed(i)) => Value::from(i),
        Item::F32(v) => Value::F32(v),
        Item::F64(v) => Value::F64(v),
        Item::Str(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Value::String(s.into()),
            Err(_) => Value::Binary(bytes.to_vec()),
        },
        Item::Bin(bytes) => Value::Binary(bytes.to_vec()),
        Item::Ext(tag, data) => {
            if depth <= 1 {
                return Err(Error::Depth);
            }
            Value::Ext(tag, data.to_vec())
        }
        Item::Array(n) => {
            if depth <= 1 {
                return Err(Error::Depth);
            }
            // `n` was checked against the bytes left.
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_value(r, depth - 1)?);
            }
            Value::Array(items)
        }
        Item::Map(n) => {
            if depth <= 1 {
                return Err(Error::Depth);
            }
            let mut entries = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let k = read_value(r, depth - 1)?;
                let v = read_value(r, depth - 1)?;
                entries.push((k, v));
            }
            Value::Map(entries)
        }
    })
}
