"""dict <-> MessagePack conversion, with the ``msgpack`` package as the oracle."""

from __future__ import annotations

import decimal
import enum
import fractions

import msgpack
import pytest

from lightning_quic import decode_data, encode_data
from lightning_quic._native import MAX_NESTING

CASES = [
    {},
    {"none": None, "t": True, "f": False},
    {"ints": [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63 - 1, 2**64 - 1]},
    {"neg": [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**63)]},
    {"floats": [0.0, -0.5, 3.14, 1e300, float("inf")]},
    {"str": ["", "a", "x" * 31, "y" * 32, "z" * 255, "w" * 256, "é✓𝄞", "q" * 70000]},
    {"bin": [b"", b"\x00", b"b" * 255, b"c" * 256, b"d" * 70000]},
    {"list": [1, [2, [3, []]], {"k": "v"}]},
    {"map": {"a": {"b": {"c": {}}}, "n": 1}},
    {"many": {f"k{i}": i for i in range(40)}},
    {"big": list(range(70000))},
    {"nested_int_keys": {1: "one", -2: "minus two"}},
]


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
def test_encode_matches_msgpack(data: dict) -> None:
    assert encode_data(data) == msgpack.packb(data, use_bin_type=True)


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
def test_decode_matches_msgpack(data: dict) -> None:
    raw = msgpack.packb(data, use_bin_type=True)
    decoded = decode_data(raw)
    assert decoded == msgpack.unpackb(raw, raw=False, strict_map_key=False)
    assert decoded == data


def test_wire_order_kept() -> None:
    data = {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}
    assert list(decode_data(encode_data(data))) == ["z", "a", "m"]
    assert list(decode_data(encode_data(data))["m"]) == ["y", "b"]


def test_tuples_encode_as_arrays() -> None:
    # btlightning turns (1, 2, 3) into bin b"\x01\x02\x03" and ("a",) into "('a',)".
    data = {"t": (1, 2, 3), "s": ("a",), "e": ()}
    assert encode_data(data) == msgpack.packb({"t": [1, 2, 3], "s": ["a"], "e": []})


def test_numeric_protocols() -> None:
    class Color(enum.IntEnum):
        RED = 3

    class Index:
        def __index__(self) -> int:
            return 7

    data = {"e": Color.RED, "i": Index(), "d": decimal.Decimal("1.5"), "f": fractions.Fraction(1, 4)}
    assert decode_data(encode_data(data)) == {"e": 3, "i": 7, "d": 1.5, "f": 0.25}


def test_subclasses() -> None:
    class S(str):
        pass

    class L(list):
        pass

    class D(dict):
        pass

    data = {"s": S("x"), "l": L([1]), "d": D(a=1), "ba": bytearray(b"ab"), "mv": memoryview(b"cd")}
    assert decode_data(encode_data(data)) == {"s": "x", "l": [1], "d": {"a": 1}, "ba": b"ab", "mv": b"cd"}


@pytest.mark.parametrize(
    "value, type_name",
    [({1, 2}, "set"), (object(), "object"), (1 + 2j, "complex"), (frozenset(), "frozenset")],
)
def test_unsupported_type_names_the_path(value: object, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        encode_data({"outer": [0, {"inner": value}]})
    message = str(info.value)
    assert type_name in message
    assert "data['outer'][1]['inner']" in message


def test_non_str_top_level_key() -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        encode_data({1: "x"})


def test_not_a_dict() -> None:
    with pytest.raises(TypeError):
        encode_data([1, 2])


def test_huge_int() -> None:
    with pytest.raises(ValueError, match="Failed to convert Python value to msgpack: integer too large") as info:
        encode_data({"n": [2**64]})
    assert "data['n'][0]" in str(info.value)
    with pytest.raises(ValueError):
        encode_data({"n": -(2**63) - 1})


def test_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="Failed to convert Python value to msgpack"):
        encode_data({"s": "\ud800"})


def test_self_referential_structures_raise() -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nesting too deep"):
        encode_data({"l": loop})
    d: dict = {}
    d["d"] = d
    with pytest.raises(ValueError, match="nesting too deep"):
        encode_data(d)


def test_nesting_limit_boundary() -> None:
    deep: list = []
    for _ in range(MAX_NESTING - 1):
        deep = [deep]
    back = decode_data(encode_data({"x": deep}))["x"]
    levels = 1
    while back:  # walked iteratively: comparing with == would hit Python's recursion limit
        (back,) = back
        levels += 1
    assert levels == MAX_NESTING
    with pytest.raises(ValueError, match="nesting too deep"):
        encode_data({"x": [deep, [deep]]})


def test_decode_specials() -> None:
    # Invalid UTF-8 in a str comes back as bytes; ext comes back as its payload (btlightning).
    bad_str = b"\x81\xa1s\xa2\xff\xfe"
    assert decode_data(bad_str) == {"s": b"\xff\xfe"}
    ext = msgpack.packb({"e": msgpack.ExtType(5, b"xyz")})
    assert decode_data(ext) == {"e": b"xyz"}
    f32 = b"\x81\xa1f\xca\x3f\xc0\x00\x00"
    assert decode_data(f32) == {"f": 1.5}


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x81", b"\x81\xa1k", b"\xc1", b"\x91\x01", b"\x81\xa1k\x01\x02", b"\xdf\xff\xff\xff\xff"],
)
def test_malformed_input_raises(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_data(raw)


def test_unhashable_key_raises() -> None:
    raw = msgpack.packb({"m": {(1,): 2}})  # a tuple key packs as an array
    with pytest.raises(TypeError):
        decode_data(raw)
