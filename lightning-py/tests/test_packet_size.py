"""Packets grow to what the path carries (``max_udp_payload=``): between a validator and a
miner on one host they reach loopback's 64 KiB, so a 1 MiB echo takes a few dozen packets
instead of the ~720 each way of 1,452-byte ones; the ceiling towards other hosts is a
checked option of both ends."""

from __future__ import annotations

from typing import Optional

import pytest
from conftest import echo_mebibytes, make_client, make_server

from lightning_quic import AsyncLightning, Lightning, hotkey_from_seed

SEED = bytes([0x5D] * 32)


def client(**kwargs: object) -> Lightning:
    return make_client(SEED, **kwargs)


@pytest.mark.parametrize(
    ("congestion", "ceiling", "fewest", "most"),
    [
        # Loopback lifts Cubic's ceiling to 64 KiB: 3 MiB in about 50 packets, plus
        # acknowledgements and probes.
        ("cubic", None, 40, 400),
        # BBR keeps the ceiling towards other hosts on loopback too: 1,452 bytes by
        # default (over 2,100 packets for 3 MiB) ...
        ("bbr", None, 2_100, 4_000),
        # ... so there the option shows: 9,000-byte packets, about 350.
        ("bbr", 9_000, 340, 1_200),
    ],
)
def test_a_mebibyte_echo_on_loopback_takes_packets_as_large_as_allowed(
    serve, congestion: str, ceiling: Optional[int], fewest: int, most: int
) -> None:
    served = serve(
        lambda s: s.register_synapse_handler("echo", lambda data: data),
        congestion=congestion,
        max_udp_payload=ceiling,
    )
    c = client(congestion=congestion, max_udp_payload=ceiling)
    try:
        echo_mebibytes(c, served.axon)
        sent = c.metrics()["path"]["sent_packets"]
    finally:
        c.close()
    assert fewest <= sent <= most, sent


@pytest.mark.parametrize("bytes_", [1199, 65528, 100_000, -1])
def test_a_ceiling_out_of_range_is_a_value_error_naming_the_range(bytes_: int) -> None:
    for make in (
        lambda: client(max_udp_payload=bytes_),
        lambda: make_server(max_udp_payload=bytes_),
        lambda: AsyncLightning(hotkey_from_seed(SEED), max_udp_payload=bytes_),
    ):
        with pytest.raises(ValueError, match="max_udp_payload must be between 1200 and 65527"):
            make()
