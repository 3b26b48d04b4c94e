#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from the known-answer vectors of
PROTOCOL.md section 4.5, in each target's input format (see the target's doc comment).

Run from anywhere: python3 fuzz/gen_seeds.py. The output is deterministic and committed;
fuzz/run.sh passes these directories to libFuzzer as read-only extra corpora.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")

# --- PROTOCOL.md 4.5, verbatim -------------------------------------------------------
MINER_HOTKEY = "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH"
VALIDATOR_HOTKEY = "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq"
FP = "uUk+L0nGSZdCQ1R18MTb5ShIRfEEiWkhmXtrts1ftjg="
TS = 1700000000
NONCE = "00112233445566778899aabbccddeeff"
REQUEST_SIG = "4MrfLRdVOEYi8Oug68S6HLsb5LUVpjF56qUo8FTLP3pCi3QJKDk7AfeVNLVVEWqbgVbJx1c4GoCPt7seAXKlhw=="
RESPONSE_SIG = "DJSsj/lcLAiHKWvmNfceK9+L7w1WqsX/jlONnUQWimH10ydWFEntakCzmEV1el+zb8tM8JLKB/7ipcwcQa9tjQ=="

HANDSHAKE_REQUEST = bytes.fromhex(
    "94d930354366437234375635447465366277784e4245384b396f4e6e5164396669617936614445456b67597446763777344671ce6553f100d9203030313132323333343435353636373738383939616162626363646465656666d958344d72664c5264564f455969384f756736385336484c7362354c5556706a46353671556f3846544c503370436933514a4b446b37416665564e4c5656455771626756624a78316334476f43507437736541584b6c68773d3d"
)
HANDSHAKE_RESPONSE = bytes.fromhex(
    "96d930354363797178586e4a756361436e5151767655673545507a6a31756f4e417841435a767a417248773561564476674e48ce6553f100d958444a53736a2f6c634c4169484b57766d4e6663654b392b4c377731577173582f6a6c4f4e6e555157696d48313079645746456e74616b437a6d455631656c2b7a6238744d384a4c4b422f376970637763516139746a513d3dc3d943636f6e6e5f354366437234375635447465366277784e4245384b396f4e6e5164396669617936614445456b675974467637773446715f31373030303030303030313233d92c75556b2b4c306e47535a644351315231384d5462355368495266454569576b686d58747274733166746a673d"
)
# Rejected after parsing: 96 d930 <miner hotkey> ce <ts> a0 c2 a0 c0.
HANDSHAKE_REJECTED = (
    bytes.fromhex("96d930") + MINER_HOTKEY.encode() + bytes.fromhex("ce6553f100a0c2a0c0")
)
HANDSHAKE_PREAUTH_REJECTED = bytes.fromhex("96a0ce6553f100a0c2a0c0")
SYNAPSE_ECHO = bytes.fromhex("93a4656368 6f81a670726f6d7074a26869ce6553f100".replace(" ", ""))
SYNAPSE_ECHO_BIN = bytes.fromhex("93a46563686f81a77061796c6f6164c403424242ce6553f100")
SYNAPSE_PING = bytes.fromhex("93a470696e6780ce6553f100")
RESPONSE_OK = bytes.fromhex("94c381a670726f6d7074a26869ce6553f100c0")
RESPONSE_ERR = bytes.fromhex(
    "94c280ce6553f100b9756e7265636f676e697a65642073796e617073652074797065"
)
CHUNK_ABC = bytes.fromhex("91c403616263")
CHUNK_EMPTY = bytes.fromhex("91c400")
END_OK = bytes.fromhex("92c3c0")
END_ERR = bytes.fromhex("92c2b168616e646c65722074696d6564206f7574")

# (type byte, payload)
VECTORS = [
    (1, HANDSHAKE_REQUEST),
    (2, HANDSHAKE_RESPONSE),
    (2, HANDSHAKE_REJECTED),
    (2, HANDSHAKE_PREAUTH_REJECTED),
    (3, SYNAPSE_ECHO),
    (3, SYNAPSE_ECHO_BIN),
    (3, SYNAPSE_PING),
    (4, RESPONSE_OK),
    (4, RESPONSE_ERR),
    (5, CHUNK_ABC),
    (5, CHUNK_EMPTY),
    (6, END_OK),
    (6, END_ERR),
]


def frame(ty, payload):
    return bytes([ty]) + struct.pack(">I", len(payload)) + payload


def u16(n):
    return struct.pack(">H", n)


def u64(n):
    return struct.pack(">Q", n)


def blob(b):
    if isinstance(b, str):
        b = b.encode()
    return u16(len(b)) + b


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def check_vectors():
    assert frame(1, HANDSHAKE_REQUEST)[:5] == bytes.fromhex("01000000b4")
    assert len(HANDSHAKE_RESPONSE) == 262
    assert len(HANDSHAKE_REJECTED) == 60
    assert len(HANDSHAKE_PREAUTH_REJECTED) == 11
    assert frame(3, SYNAPSE_ECHO) == bytes.fromhex(
        "030000001693a46563686f81a670726f6d7074a26869ce6553f100"
    )
    assert HANDSHAKE_RESPONSE[58:58 + 88] == RESPONSE_SIG.encode()


def frame_decoder():
    all_frames = b"".join(frame(t, p) for t, p in VECTORS)
    for i, (t, p) in enumerate(VECTORS):
        # limit selector 6 = 64 MiB, no extra pieces.
        write("frame_decoder", f"vector-{i:02}", bytes([6, 0]) + frame(t, p))
    write("frame_decoder", "all-whole", bytes([6, 0]) + all_frames)
    write("frame_decoder", "all-pieces", bytes([6, 6, 1, 4, 7, 100, 3, 0]) + all_frames)
    write("frame_decoder", "all-small-limit", bytes([3, 3, 5, 5, 5]) + all_frames)
    write("frame_decoder", "truncated", bytes([6, 2, 2, 9]) + frame(1, HANDSHAKE_REQUEST)[:-7])
    write("frame_decoder", "too-large", bytes([4, 1, 3]) + bytes.fromhex("0300100000") + b"x" * 8)
    write("frame_decoder", "unknown-type", bytes([6, 0]) + frame(3, SYNAPSE_PING) + b"\x07\x00")


def message_decode():
    for i, (t, p) in enumerate(VECTORS):
        write("message_decode", f"vector-{i:02}", bytes([t - 1]) + p)
    write("message_decode", "stream", bytes([6]) + b"".join(frame(t, p) for t, p in VECTORS))
    # Map forms the reference also accepts (4.2): keys by name, missing optional field.
    map_end = bytes.fromhex("82a773756363657373c3a56572726f72c0")
    write("message_decode", "map-streamend", bytes([5]) + map_end)
    map_chunk = bytes.fromhex("81a464617461c403616263")
    write("message_decode", "map-chunk", bytes([4]) + map_chunk)
    # Handshake response of 5 elements (cert_fingerprint defaulted).
    five = bytes([0x95]) + HANDSHAKE_REJECTED[1:-1]
    write("message_decode", "response-5", bytes([1]) + five)


def handshake_verify():
    strings = (
        blob(VALIDATOR_HOTKEY) + blob(NONCE) + blob(REQUEST_SIG) + blob(FP)
        + blob(MINER_HOTKEY) + blob(NONCE)
    )
    ops = bytes([4, 2, 3, 16, 0, 1, 0, 1, 2, 1, 1, 0x80, 5, 7, 3, 70, 2, 9, 1, 2, 60, 0x81])
    # ts_raw 2000 puts the timestamp exactly on TS; now 10 s later; max age 300.
    times = u64(2010) + u64(2000) + u16(300)
    request_choice = 1 | (1 << 2) | (1 << 4) | (1 << 6)
    response_choice = 2 | (2 << 4) | (1 << 6) | (1 << 7) | (1 << 8) | 0x200
    write("handshake_verify", "request-vector", u16(request_choice) + times + strings + ops)
    write("handshake_verify", "response-vector", u16(response_choice) + times + strings + ops)
    write("handshake_verify", "all-fuzzed", u16(0) + times + strings + ops)
    resp_strings = (
        blob(MINER_HOTKEY) + blob(NONCE) + blob(RESPONSE_SIG) + blob(FP)
        + blob(MINER_HOTKEY) + blob(NONCE)
    )
    write("handshake_verify", "response-fuzzed", u16(0x200) + times + resp_strings + ops)
    write("handshake_verify", "raw-times", u16(0x8000 | request_choice) + u64(TS + 10) + u64(TS)
          + u16(300) + strings + ops)


def server_datagrams():
    connect = 0x80
    # Ops: 0-2 raw, 3 tamper, 4 replay, 5 patch, 6-7 advance, 8 connect, 9 echo request.
    raw = lambda src, payload: bytes([0, src]) + u16(len(payload)) + payload
    advance = lambda b: bytes([6, b])
    echo = lambda n: bytes([9, n])
    write("server_datagrams", "honest", bytes([connect]) + echo(3) + advance(10) + echo(40))
    write("server_datagrams", "no-retry-raw",
          bytes([connect]) + raw(2, frame(1, HANDSHAKE_REQUEST)) + raw(5, b"\xc0" + b"\x00" * 1199)
          + advance(14) + echo(1))
    write("server_datagrams", "retry-always", bytes([connect | 1]) + advance(10) + echo(2))
    write("server_datagrams", "replays",
          bytes([connect | 2]) + bytes([4, 0, 3, 4, 1, 5, 4, 2, 0]) + advance(17) + advance(17))
    write("server_datagrams", "tamper",
          bytes([0]) + bytes([3, 1, 0, 40, 0xff, 3, 4, 3, 3, 2]) + bytes([8]) + advance(12)
          + echo(9))
    write("server_datagrams", "patch",
          bytes([connect]) + bytes([5, 1]) + u16(20) + blob(b"\x00" * 8) + advance(16))
    write("server_datagrams", "version-negotiation",
          bytes([0]) + raw(3, bytes.fromhex("c0ffffffff08") + b"\x01" * 8 + b"\x00" + b"\x00" * 1185))


def authenticated_stream():
    def streams(flags, *payloads):
        return bytes([flags]) + b"".join(blob(p) for p in payloads)

    write("authenticated_stream", "echo-frame", streams(0, frame(3, SYNAPSE_ECHO)))
    write("authenticated_stream", "echo-bin-racing", streams(1, frame(3, SYNAPSE_ECHO_BIN)))
    write("authenticated_stream", "ping-unknown", streams(0, frame(3, SYNAPSE_PING)))
    write("authenticated_stream", "handshake-again", streams(1, frame(1, HANDSHAKE_REQUEST)))
    write("authenticated_stream", "server-types",
          streams(0, frame(4, RESPONSE_OK), frame(5, CHUNK_ABC), frame(6, END_OK),
                  frame(2, HANDSHAKE_RESPONSE)))
    write("authenticated_stream", "truncated",
          streams(1, frame(3, SYNAPSE_ECHO)[:-3], frame(3, SYNAPSE_ECHO)[:3], b""))
    write("authenticated_stream", "oversize", streams(0, bytes.fromhex("03ffffffff") + b"\x93"))
    write("authenticated_stream", "two-frames",
          streams(0, frame(3, SYNAPSE_PING) + frame(3, SYNAPSE_ECHO)))
    # A stream request for the streaming synapse on a unary read, and the slow handler.
    stream_req = bytes.fromhex("93a673747265616d80ce6553f100")
    slow_req = bytes.fromhex("93a4736c6f7780ce6553f100")
    write("authenticated_stream", "stream-and-slow",
          streams(1, frame(3, stream_req), frame(3, slow_req)))
    write("authenticated_stream", "map-form",
          streams(0, frame(3, bytes.fromhex("83ac73796e617073655f74797065a46563686fa46461746180a974696d657374616d7000"))))


def sim_scenario():
    # Ops: 0 connect, 1-2 echo, 3 stream, 4 other, 5 cancel, 6 partition, 7 heal,
    # 8-9 advance, 10 corrupt, 11 duplicate, 12 truncate, 13 link, 14 disconnect/backoff/close,
    # 15 run now.
    connect = bytes([0])
    echo = lambda n, t: bytes([1, n, t])
    stream = lambda n, size, t: bytes([3, n]) + u16(size) + bytes([t])
    advance = lambda b: bytes([8, b])
    write("sim_scenario", "honest", bytes([1]) + connect + echo(4, 0) + stream(5, 100, 0) + advance(12))
    write("sim_scenario", "partition",
          bytes([2]) + connect + advance(10) + echo(2, 2) + bytes([6]) + echo(3, 0) + advance(15)
          + bytes([7]) + advance(14))
    write("sim_scenario", "cancel",
          bytes([3]) + connect + advance(10) + stream(30, 2000, 0) + bytes([5, 0]) + echo(1, 1)
          + advance(12))
    write("sim_scenario", "corrupt",
          bytes([4]) + connect + bytes([10, 0]) + u16(30) + bytes([0x10, 10, 1]) + u16(7)
          + bytes([1, 11, 0, 11, 1]) + echo(5, 3) + advance(13))
    write("sim_scenario", "lossy-link",
          bytes([5]) + bytes([13, 0x02, 20, 5, 0, 13, 0x09, 30, 0, 1]) + connect
          + echo(9, 3) + stream(10, 1000, 3) + advance(16))
    write("sim_scenario", "others",
          bytes([6]) + connect + bytes([4, 0, 4, 0x11, 4, 2, 4, 3, 4, 0x24]) + advance(15) + advance(15))
    write("sim_scenario", "disconnect",
          bytes([7]) + connect + advance(10) + echo(2, 0) + bytes([14, 0]) + echo(2, 0)
          + bytes([14, 1]) + echo(2, 0) + bytes([14, 2]) + advance(14) + echo(3, 0))
    write("sim_scenario", "truncate-mtu",
          bytes([8]) + bytes([12, 1]) + u16(100) + bytes([13, 0x20, 0, 0, 0]) + connect + advance(16))


if __name__ == "__main__":
    check_vectors()
    frame_decoder()
    message_decode()
    handshake_verify()
    server_datagrams()
    authenticated_stream()
    sim_scenario()
    total = sum(len(files) for _, _, files in os.walk(OUT))
    print(f"wrote {total} seed files under {OUT}")
