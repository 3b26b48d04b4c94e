"""The congestion controller is a choice of each end (``congestion=``): a BBR validator and
a BBR miner exchange large answers intact, each end may choose differently, and an
unknown name is a ValueError that lists the known ones."""

from __future__ import annotations

import pytest
from conftest import echo_mebibytes, make_client, make_server

from lightning_quic import AsyncLightning, Lightning, hotkey_from_seed

SEED = bytes([0x5C] * 32)


def client(**kwargs: object) -> Lightning:
    return make_client(SEED, **kwargs)


@pytest.mark.parametrize(
    ("miner", "validator"), [("bbr", "bbr"), ("cubic", "bbr"), ("bbr", "newreno")]
)
def test_each_end_chooses_its_controller_and_large_answers_arrive_intact(
    serve, miner: str, validator: str
) -> None:
    served = serve(
        lambda s: s.register_synapse_handler("echo", lambda data: data), congestion=miner
    )
    c = client(congestion=validator)
    try:
        echo_mebibytes(c, served.axon)
    finally:
        c.close()


@pytest.mark.parametrize(
    "make", [lambda: client(congestion="vegas"), lambda: make_server(congestion="vegas")]
)
def test_an_unknown_controller_is_a_value_error(make) -> None:
    with pytest.raises(ValueError, match="cubic, newreno or bbr"):
        make()


def test_the_asyncio_client_takes_the_same_option() -> None:
    with pytest.raises(ValueError, match="unknown congestion controller"):
        AsyncLightning(hotkey_from_seed(SEED), congestion="BBR2")
    assert AsyncLightning(hotkey_from_seed(SEED), congestion="BBR").wallet_hotkey
