"""The first query of a new connection with and without pipelining (Lightning at both
ends negotiates it; see ``Lightning``'s ``pipeline_first_requests``)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import VALIDATOR_HOTKEY, VALIDATOR_SEED
from lightning_quic import Lightning


@pytest.mark.parametrize("pipeline", [True, False])
def test_first_query_to_a_fresh_miner_is_answered_with_or_without_pipelining(
    echo: Any, pipeline: bool
) -> None:
    # The first query of a new connection is the one that may travel behind the handshake.
    c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY, pipeline_first_requests=pipeline)
    c.set_validator_keypair(VALIDATOR_SEED)
    c.initialize_connections([])
    try:
        for n in range(3):
            r = c.query_axon(echo.axon, {"synapse_type": "echo", "data": {"n": n}})
            assert r["success"] and r["data"] == {"n": n}, r
    finally:
        c.close()


def test_pipelining_must_be_a_bool() -> None:
    with pytest.raises(TypeError):
        Lightning(wallet_hotkey=VALIDATOR_HOTKEY, pipeline_first_requests="yes")  # type: ignore[arg-type]
