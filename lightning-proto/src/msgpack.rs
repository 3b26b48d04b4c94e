//! Just enough MessagePack for the wire messages.
//!
//! The reader borrows the input and never allocates; every length is checked
//! against the bytes that are really there before it is used, and nesting is
//! bounded with the same counter semantics as rmp-serde (see [`MAX_DEPTH`]),
//! so that what we accept is exactly what the reference accepts.
//!
//! The writer emits the shortest encodings, which is what rmp-serde emits.

use std::fmt;

/// rmp-serde's nesting budget. Entering an array, map or ext takes one unit
/// and hitting zero is an error, so at most 1023 containers can be open.
pub(crate) const MAX_DEPTH: u16 = 1024;

/// What kind of MessagePack value a marker starts, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool,
    /// Positive fixint or `uint 8/16/32/64`.
    UnsignedInt,
    /// Negative fixint or `int 8/16/32/64` (whatever its value).
    SignedInt,
    /// `float 32/64`.
    Float,
    /// `str` family.
    Str,
    /// `bin` family.
    Bin,
    /// `array` family.
    Array,
    /// `map` family.
    Map,
    /// `ext` / `fixext` family.
    Ext,
    /// The never-used marker `0xc1`.
    Reserved,
}

impl ValueKind {
    /// The kind of value that starts with `marker`.
    pub(crate) fn of(marker: u8) -> Self {
        match marker {
            0x00..=0x7f | 0xcc..=0xcf => Self::UnsignedInt,
            0x80..=0x8f | 0xde | 0xdf => Self::Map,
            0x90..=0x9f | 0xdc | 0xdd => Self::Array,
            0xa0..=0xbf | 0xd9..=0xdb => Self::Str,
            0xc0 => Self::Nil,
            0xc1 => Self::Reserved,
            0xc2 | 0xc3 => Self::Bool,
            0xc4..=0xc6 => Self::Bin,
            0xc7..=0xc9 | 0xd4..=0xd8 => Self::Ext,
            0xca | 0xcb => Self::Float,
            0xd0..=0xd3 | 0xe0..=0xff => Self::SignedInt,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Nil => "nil",
            Self::Bool => "bool",
            Self::UnsignedInt => "unsigned integer",
            Self::SignedInt => "signed integer",
            Self::Float => "float",
            Self::Str => "str",
            Self::Bin => "bin",
            Self::Array => "array",
            Self::Map => "map",
            Self::Ext => "ext",
            Self::Reserved => "reserved marker 0xc1",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reader failure, without the field context the caller adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// Input ended inside a value (or a length claims more than is left).
    Eof,
    /// A value of another type was found.
    Type {
        expected: &'static str,
        found: ValueKind,
    },
    /// A negative integer where an unsigned one is required.
    Negative,
    /// String bytes that are not UTF-8.
    Utf8,
    /// The nesting budget ran out.
    Depth,
    /// The marker `0xc1`.
    Reserved,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// A struct field key in map form: a name, or a field index (serde-derive
/// accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Name(&'a [u8]),
    Index(u64),
}

/// An integer as encoded: unsigned markers, or signed markers (which may
/// still hold a non-negative value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    Unsigned(u64),
    Signed(i64),
}

/// A scalar or container header, as read by [`Reader::read_item`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Item<'a> {
    Nil,
    Bool(bool),
    Int(Int),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
    Array(u32),
    Map(u32),
}

/// Cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn peek(&self) -> Result<u8> {
        self.buf.get(self.pos).copied().ok_or(Error::Eof)
    }

    fn byte(&mut self) -> Result<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Eof);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn be_u8(&mut self) -> Result<u32> {
        self.byte().map(u32::from)
    }

    fn be_u16(&mut self) -> Result<u32> {
        self.array::<2>().map(|b| u32::from(u16::from_be_bytes(b)))
    }

    fn be_u32(&mut self) -> Result<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    /// Length of a container whose elements take at least `min_bytes_each`
    /// bytes; refused early if the rest of the input cannot hold them.
    fn checked_count(&self, count: u32, min_bytes_each: u64) -> Result<u32> {
        if u64::from(count) * min_bytes_each > self.remaining() as u64 {
            return Err(Error::Eof);
        }
        Ok(count)
    }

    /// Reads `nil` if that is what comes next.
    pub(crate) fn read_nil_if_present(&mut self) -> Result<bool> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// An array header: the element count.
    pub(crate) fn read_array_len(&mut self) -> Result<u32> {
        let m = self.peek()?;
        let n = match m {
            0x90..=0x9f => {
                self.pos += 1;
                u32::from(m & 0x0f)
            }
            0xdc => {
                self.pos += 1;
                self.be_u16()?
            }
            0xdd => {
                self.pos += 1;
                self.be_u32()?
            }
            _ => {
                return Err(Error::Type {
                    expected: "array",
                    found: ValueKind::of(m),
                })
            }
        };
        self.checked_count(n, 1)
    }

    /// A map header: the entry count.
    pub(crate) fn read_map_len(&mut self) -> Result<u32> {
        let m = self.peek()?;
        let n = match m {
            0x80..=0x8f => {
                self.pos += 1;
                u32::from(m & 0x0f)
            }
            0xde => {
                self.pos += 1;
                self.be_u16()?
            }
            0xdf => {
                self.pos += 1;
                self.be_u32()?
            }
            _ => {
                return Err(Error::Type {
                    expected: "map",
                    found: ValueKind::of(m),
                })
            }
        };
        self.checked_count(n, 2)
    }

    /// The bytes of a `str` or `bin`, and whether it was `bin`.
    pub(crate) fn read_str_or_bin(&mut self, expected: &'static str) -> Result<(&'a [u8], bool)> {
        let m = self.peek()?;
        let (len, is_bin) = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                (u32::from(m & 0x1f), false)
            }
            0xd9 | 0xc4 => {
                self.pos += 1;
                (self.be_u8()?, m == 0xc4)
            }
            0xda | 0xc5 => {
                self.pos += 1;
                (self.be_u16()?, m == 0xc5)
            }
            0xdb | 0xc6 => {
                self.pos += 1;
                (self.be_u32()?, m == 0xc6)
            }
            _ => {
                return Err(Error::Type {
                    expected,
                    found: ValueKind::of(m),
                })
            }
        };
        Ok((self.take(len as usize)?, is_bin))
    }

    /// A string: `str`, or `bin` holding UTF-8 (rmp-serde lets both
    /// through to a `String`).
    pub(crate) fn read_str(&mut self) -> Result<&'a str> {
        let (bytes, _) = self.read_str_or_bin("str")?;
        std::str::from_utf8(bytes).map_err(|_| Error::Utf8)
    }

    /// An integer of any encoding.
    pub(crate) fn read_int(&mut self, expected: &'static str) -> Result<Int> {
        let m = self.peek()?;
        let v = match m {
            0x00..=0x7f => {
                self.pos += 1;
                Int::Unsigned(u64::from(m))
            }
            0xe0..=0xff => {
                self.pos += 1;
                Int::Signed(i64::from(m as i8))
            }
            0xcc => {
                self.pos += 1;
                Int::Unsigned(u64::from(self.byte()?))
            }
            0xcd => {
                self.pos += 1;
                Int::Unsigned(u64::from(self.be_u16()?))
            }
            0xce => {
                self.pos += 1;
                Int::Unsigned(u64::from(self.be_u32()?))
            }
            0xcf => {
                self.pos += 1;
                Int::Unsigned(u64::from_be_bytes(self.array::<8>()?))
            }
            0xd0 => {
                self.pos += 1;
                Int::Signed(i64::from(i8::from_be_bytes(self.array::<1>()?)))
            }
            0xd1 => {
                self.pos += 1;
                Int::Signed(i64::from(i16::from_be_bytes(self.array::<2>()?)))
            }
            0xd2 => {
                self.pos += 1;
                Int::Signed(i64::from(i32::from_be_bytes(self.array::<4>()?)))
            }
            0xd3 => {
                self.pos += 1;
                Int::Signed(i64::from_be_bytes(self.array::<8>()?))
            }
            _ => {
                return Err(Error::Type {
                    expected,
                    found: ValueKind::of(m),
                })
            }
        };
        Ok(v)
    }

    /// A non-negative integer of any width or signedness of encoding.
    pub(crate) fn read_uint(&mut self) -> Result<u64> {
        match self.read_int("unsigned integer")? {
            Int::Unsigned(v) => Ok(v),
            Int::Signed(v) => u64::try_from(v).map_err(|_| Error::Negative),
        }
    }

    /// A bool; integers are not bools.
    pub(crate) fn read_bool(&mut self) -> Result<bool> {
        match self.peek()? {
            0xc2 => {
                self.pos += 1;
                Ok(false)
            }
            0xc3 => {
                self.pos += 1;
                Ok(true)
            }
            m => Err(Error::Type {
                expected: "bool",
                found: ValueKind::of(m),
            }),
        }
    }

    /// A struct key in map form. serde-derive identifiers take strings,
    /// bytes and unsigned integers; signed encodings are refused even when
    /// non-negative.
    pub(crate) fn read_key(&mut self) -> Result<Key<'a>> {
        const EXPECTED: &str = "field name or index";
        match ValueKind::of(self.peek()?) {
            ValueKind::Str | ValueKind::Bin => {
                let (bytes, _) = self.read_str_or_bin(EXPECTED)?;
                Ok(Key::Name(bytes))
            }
            ValueKind::UnsignedInt => match self.read_int(EXPECTED)? {
                Int::Unsigned(v) => Ok(Key::Index(v)),
                Int::Signed(_) => Err(Error::Type {
                    expected: EXPECTED,
                    found: ValueKind::SignedInt,
                }),
            },
            found => Err(Error::Type {
                expected: EXPECTED,
                found,
            }),
        }
    }

    /// One scalar, or the header of a container (its elements follow).
    pub(crate) fn read_item(&mut self) -> Result<Item<'a>> {
        let m = self.peek()?;
        Ok(match ValueKind::of(m) {
            ValueKind::Nil => {
                self.pos += 1;
                Item::Nil
            }
            ValueKind::Bool => Item::Bool(self.read_bool()?),
            ValueKind::UnsignedInt | ValueKind::SignedInt => Item::Int(self.read_int("integer")?),
            ValueKind::Float => {
                self.pos += 1;
                if m == 0xca {
                    Item::F32(f32::from_be_bytes(self.array::<4>()?))
                } else {
                    Item::F64(f64::from_be_bytes(self.array::<8>()?))
                }
            }
            ValueKind::Str | ValueKind::Bin => {
                let (bytes, is_bin) = self.read_str_or_bin("str or bin")?;
                if is_bin {
                    Item::Bin(bytes)
                } else {
                    Item::Str(bytes)
                }
            }
            ValueKind::Array => Item::Array(self.read_array_len()?),
            ValueKind::Map => Item::Map(self.read_map_len()?),
            ValueKind::Ext => {
                self.pos += 1;
                let len = match m {
                    0xd4 => 1,
                    0xd5 => 2,
                    0xd6 => 4,
                    0xd7 => 8,
                    0xd8 => 16,
                    0xc7 => self.be_u8()?,
                    0xc8 => self.be_u16()?,
                    _ => self.be_u32()?,
                };
                let tag = i8::from_be_bytes(self.array::<1>()?);
                Item::Ext(tag, self.take(len as usize)?)
            }
            ValueKind::Reserved => return Err(Error::Reserved),
        })
    }

    /// Skips one complete value, checking that it is well formed.
    ///
    /// `depth` is the nesting budget left *before* this value, in
    /// rmp-serde's terms: a container (or ext) entered when it is 1 fails.
    /// Iterative, so hostile nesting cannot exhaust the call stack; every
    /// step consumes input, so it always terminates. Open containers are
    /// tracked inline up to a modest depth and spill to the heap beyond it
    /// (bounded by `depth`), since this runs once per map entry and must stay
    /// cheap for flat data.
    pub(crate) fn skip_value(&mut self, depth: u16) -> Result<()> {
        const INLINE: usize = 32;
        let mut inline = [0u64; INLINE];
        let mut spilled: Vec<u64> = Vec::new();
        let mut open = 0usize;
        let mut depth = depth;
        // Values still to read in the innermost open container.
        let mut pending: u64 = 1;
        loop {
            while pending == 0 {
                if open == 0 {
                    return Ok(());
                }
                open -= 1;
                pending = if open < INLINE {
                    inline[open]
                } else {
                    spilled.pop().ok_or(Error::Depth)?
                };
                depth += 1;
            }
            pending -= 1;
            let children = match self.read_item()? {
                Item::Array(n) => u64::from(n),
                Item::Map(n) => 2 * u64::from(n),
                Item::Ext(..) => {
                    if depth <= 1 {
                        return Err(Error::Depth);
                    }
                    continue;
                }
                _ => continue,
            };
            if depth <= 1 {
                return Err(Error::Depth);
            }
            if open < INLINE {
                inline[open] = pending;
            } else {
                spilled.push(pending);
            }
            open += 1;
            depth -= 1;
            pending = children;
        }
    }
}

/// Shortest-form MessagePack writers (the forms rmp-serde produces).
pub(crate) mod write {
    /// A length that MessagePack cannot express (above `u32::MAX`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct TooLong(pub(crate) usize);

    fn len32(len: usize) -> Result<u32, TooLong> {
        u32::try_from(len).map_err(|_| TooLong(len))
    }

    fn sized(out: &mut Vec<u8>, len: u32, fix: Option<(u8, u32)>, markers: [u8; 3]) {
        match fix {
            Some((base, limit)) if len < limit => out.push(base | len as u8),
            _ => {
                if len < 256 && markers[0] != 0 {
                    out.push(markers[0]);
                    out.push(len as u8);
                } else if len < 65_536 {
                    out.push(markers[1]);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    out.push(markers[2]);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
        }
    }

    /// Bytes [`uint`] writes for `v`.
    pub(crate) fn uint_size(v: u64) -> usize {
        match v {
            0..128 => 1,
            128..256 => 2,
            256..65_536 => 3,
            65_536..=0xffff_ffff => 5,
            _ => 9,
        }
    }

    /// Bytes [`str`] writes for a string of `len` bytes (lengths [`str_len`] accepts).
    pub(crate) fn str_size(len: usize) -> usize {
        let header = match len {
            0..32 => 1,
            32..256 => 2,
            256..65_536 => 3,
            _ => 5,
        };
        header + len
    }

    pub(crate) fn nil(out: &mut Vec<u8>) {
        out.push(0xc0);
    }

    pub(crate) fn boolean(out: &mut Vec<u8>, v: bool) {
        out.push(if v { 0xc3 } else { 0xc2 });
    }

    pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
        if v < 128 {
            out.push(v as u8);
        } else if v < 256 {
            out.extend_from_slice(&[0xcc, v as u8]);
        } else if v < 65_536 {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u64::from(u32::MAX) {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// Signed values: non-negative ones use the unsigned forms, as rmp does.
    pub(crate) fn sint(out: &mut Vec<u8>, v: i64) {
        if v >= 0 {
            uint(out, v as u64);
        } else if v >= -32 {
            out.push(v as i8 as u8);
        } else if v >= i64::from(i8::MIN) {
            out.push(0xd0);
            out.extend_from_slice(&(v as i8).to_be_bytes());
        } else if v >= i64::from(i16::MIN) {
            out.push(0xd1);
            out.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i64::from(i32::MIN) {
            out.push(0xd2);
            out.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    pub(crate) fn f32(out: &mut Vec<u8>, v: f32) {
        out.push(0xca);
        out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn f64(out: &mut Vec<u8>, v: f64) {
        out.push(0xcb);
        out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn array_len(out: &mut Vec<u8>, len: usize) -> Result<(), TooLong> {
        sized(out, len32(len)?, Some((0x90, 16)), [0, 0xdc, 0xdd]);
        Ok(())
    }

    pub(crate) fn map_len(out: &mut Vec<u8>, len: usize) -> Result<(), TooLong> {
        sized(out, len32(len)?, Some((0x80, 16)), [0, 0xde, 0xdf]);
        Ok(())
    }

    pub(crate) fn str_len(out: &mut Vec<u8>, len: usize) -> Result<(), TooLong> {
        sized(out, len32(len)?, Some((0xa0, 32)), [0xd9, 0xda, 0xdb]);
        Ok(())
    }

    pub(crate) fn str_bytes(out: &mut Vec<u8>, s: &[u8]) -> Result<(), TooLong> {
        str_len(out, s.len())?;
        out.extend_from_slice(s);
        Ok(())
    }

    pub(crate) fn str(out: &mut Vec<u8>, s: &str) -> Result<(), TooLong> {
        str_bytes(out, s.as_bytes())
    }

    pub(crate) fn bin_len(out: &mut Vec<u8>, len: usize) -> Result<(), TooLong> {
        sized(out, len32(len)?, None, [0xc4, 0xc5, 0xc6]);
        Ok(())
    }

    pub(crate) fn bin(out: &mut Vec<u8>, b: &[u8]) -> Result<(), TooLong> {
        bin_len(out, b.len())?;
        out.extend_from_slice(b);
        Ok(())
    }

    pub(crate) fn ext(out: &mut Vec<u8>, tag: i8, data: &[u8]) -> Result<(), TooLong> {
        let len = len32(data.len())?;
        match len {
            1 => out.push(0xd4),
            2 => out.push(0xd5),
            4 => out.push(0xd6),
            8 => out.push(0xd7),
            16 => out.push(0xd8),
            _ => sized(out, len, None, [0xc7, 0xc8, 0xc9]),
        }
        out.push(tag as u8);
        out.extend_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rmp_bytes(f: impl FnOnce(&mut rmp::encode::ByteBuf)) -> Vec<u8> {
        let mut buf = rmp::encode::ByteBuf::new();
        f(&mut buf);
        buf.into_vec()
    }

    #[test]
    fn size_helpers_match_the_writers_at_every_boundary() {
        for v in [
            0,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write::uint(&mut out, v);
            assert_eq!(write::uint_size(v), out.len(), "uint {v}");
        }
        for len in [0, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
            let mut out = Vec::new();
            write::str(&mut out, &"x".repeat(len)).unwrap();
            assert_eq!(write::str_size(len), out.len(), "str of {len}");
        }
    }

    proptest! {
        #[test]
        fn writers_match_rmp(u in any::<u64>(), i in any::<i64>(), len in prop_oneof![0usize..70_000, any::<u32>().prop_map(|v| v as usize)], tag in any::<i8>(), ext_len in 0usize..300) {
            let mut out = Vec::new();
            write::uint(&mut out, u);
            prop_assert_eq!(&out, &rmp_bytes(|b| { let _ = rmp::encode::write_uint(b, u); }));
            out.clear();
            write::sint(&mut out, i);
            prop_assert_eq!(&out, &rmp_bytes(|b| { let _ = rmp::encode::write_sint(b, i); }));
            out.clear();
            write::array_len(&mut out, len).unwrap();
            prop_assert_eq!(&out, &rmp_bytes(|b| { let _ = rmp::encode::write_array_len(b, len as u32); }));
            out.clear();
            write::map_len(&mut out, len).unwrap();
            prop_assert_eq!(&out, &rmp_bytes(|b| { let _ = rmp::encode::write_map_len(b, len as u32); }));
            out.clear();
            write::str_len(&mut out, len).unwrap();
            prop_assert_eq!(&out, &rmp_bytes(|b| { let _ = rmp::encode::write_str_len(b, len as u32); }));
            out.clear();
            write::bin_len(&mut out, len).unwrap();
            prop_assert_eq!(&out, &rmp_bytes(|b| { let _ = rmp::encode::write_bin_len(b, len as u32); }));
            out.clear();
            let data = vec![7u8; ext_len];
            write::ext(&mut out, tag, &data).unwrap();
            let mut expected = rmp_bytes(|b| { let _ = rmp::encode::write_ext_meta(b, ext_len as u32, tag); });
            expected.extend_from_slice(&data);
            prop_assert_eq!(&out, &expected);
        }

        #[test]
        fn int_reader_inverts_writers(u in any::<u64>(), i in any::<i64>()) {
            let mut out = Vec::new();
            write::uint(&mut out, u);
            write::sint(&mut out, i);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.read_uint(), Ok(u));
            let got = r.read_int("integer").unwrap();
            let back = match got { Int::Unsigned(v) => i128::from(v), Int::Signed(v) => i128::from(v) };
            prop_assert_eq!(back, i128::from(i));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn skip_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), depth in 0u16..=MAX_DEPTH) {
            let mut r = Reader::new(&bytes);
            let _ = r.skip_value(depth);
            prop_assert!(r.position() <= bytes.len());
        }
    }

    #[test]
    fn skip_depth_budget_matches_rmp_serde() {
        // rmp-serde with its default budget of 1024 accepts 1023 nested
        // arrays and refuses 1024.
        let nested = |n: usize| {
            let mut v = vec![0x91u8; n - 1];
            v.push(0x90);
            v
        };
        let ok = nested(1023);
        let bad = nested(1024);
        assert!(rmp_serde::from_slice::<serde::de::IgnoredAny>(&ok).is_ok());
        assert!(rmp_serde::from_slice::<serde::de::IgnoredAny>(&bad).is_err());
        assert_eq!(Reader::new(&ok).skip_value(MAX_DEPTH), Ok(()));
        assert_eq!(Reader::new(&bad).skip_value(MAX_DEPTH), Err(Error::Depth));
        // Ext counts as a level too.
        let ext_at = |arrays: usize| {
            let mut v = vec![0x91u8; arrays];
            v.extend_from_slice(&[0xd4, 0x01, 0x00]);
            v
        };
        assert!(rmp_serde::from_slice::<serde::de::IgnoredAny>(&ext_at(1022)).is_ok());
        assert_eq!(Reader::new(&ext_at(1022)).skip_value(MAX_DEPTH), Ok(()));
        assert!(rmp_serde::from_slice::<serde::de::IgnoredAny>(&ext_at(1023)).is_err());
        assert_eq!(
            Reader::new(&ext_at(1023)).skip_value(MAX_DEPTH),
            Err(Error::Depth)
        );
    }

    #[test]
    fn skip_rejects_huge_counts_without_looping() {
        // array32 claiming 4 billion elements in a 10-byte input.
        let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0];
        assert_eq!(Reader::new(&bytes).skip_value(MAX_DEPTH), Err(Error::Eof));
        let bytes = [0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert_eq!(Reader::new(&bytes).skip_value(MAX_DEPTH), Err(Error::Eof));
        assert_eq!(
            Reader::new(&[0xc1]).skip_value(MAX_DEPTH),
            Err(Error::Reserved)
        );
    }
}
