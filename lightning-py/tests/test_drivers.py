"""A Python miner with several QUIC endpoint drivers on one port (``drivers=``): every
validator is answered, and the connection stats and metrics count all drivers."""

from __future__ import annotations

import pytest
from conftest import make_server, query

from lightning_quic import Lightning, hotkey_from_seed

VALIDATORS = 12


def test_two_drivers_answer_every_validator_and_count_them_all(serve) -> None:
    served = serve(lambda s: s.register_synapse_handler("echo", lambda data: data), drivers=2)
    clients = []
    try:
        for i in range(VALIDATORS):
            seed = bytes([0x40 + i] * 32)
            c = Lightning(wallet_hotkey=hotkey_from_seed(seed))
            c.set_validator_keypair(seed)
            c.initialize_connections([])
            clients.append(c)
            for n in range(3):
                response = query(c, served.axon, "echo", {"i": i, "n": n})
                assert response["success"], response
                assert response["data"] == {"i": i, "n": n}

        stats = served.server.get_connection_stats()
        assert stats["verified_connections"] == str(VALIDATORS)
        m = served.server.metrics()
        assert m["requests"]["echo"]["ok"] == VALIDATORS * 3
        assert m["connections"] == VALIDATORS
        assert m["validators"] == VALIDATORS
        assert m["handshakes_accepted"] == VALIDATORS
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("drivers", [0, 65])
def test_an_impossible_driver_count_is_a_value_error(drivers: int) -> None:
    with pytest.raises(ValueError, match="drivers must be between 1 and 64"):
        make_server(drivers=drivers)
