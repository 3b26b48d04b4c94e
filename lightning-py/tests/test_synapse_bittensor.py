"""The same Axon/Dendrite with bittensor 10.5.0's own ``bt.Synapse`` subclasses, unchanged.

bittensor is not a dependency of lightning-quic: these tests skip unless it imports (run
them with ``lightning-py/scripts/test_bittensor.sh``, which installs bittensor 10.5.0 in a
venv of its own). Nothing here needs a network: no bittensor Axon or Dendrite is built, so
nothing asks for the machine's public IP.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, List, Optional, Tuple

import pytest

bt = pytest.importorskip("bittensor", reason="bittensor 10.5 is not installed in this venv")

from conftest import MINER_SEED, VALIDATOR_HOTKEY, VALIDATOR_SEED  # noqa: E402
from lightning_quic.synapse import Axon, Dendrite  # noqa: E402

pytestmark = pytest.mark.asyncio


class BtDummy(bt.Synapse):
    """The subnet template's synapse, written against bittensor."""

    dummy_input: int
    dummy_output: Optional[int] = None

    def deserialize(self) -> Optional[int]:
        return self.dummy_output


class BtTokens(bt.StreamingSynapse):
    """A bittensor streaming synapse (its aiohttp hooks are not used over Lightning)."""

    n: int = 3
    completion: str = ""

    async def process_streaming_response(self, response: Any) -> AsyncIterator[Any]:  # pragma: no cover
        yield response

    def extract_response_json(self, response: Any) -> dict:  # pragma: no cover
        return {}


async def test_bittensor_is_the_version_the_issue_names() -> None:
    assert bt.__version__ == "10.5.0"


async def test_forward_blacklist_and_hotkey_with_bt_synapses() -> None:
    seen: List[str] = []

    async def forward(synapse: BtDummy) -> BtDummy:
        seen.append(synapse.dendrite.hotkey)
        synapse.dummy_output = synapse.dummy_input + 1
        return synapse

    def blacklist(synapse: BtDummy) -> Tuple[bool, str]:
        return synapse.dummy_input < 0, "negative"

    async with Axon(seed=MINER_SEED, host="127.0.0.1", port=0).attach(forward, blacklist_fn=blacklist) as axon:
        async with Dendrite(seed=VALIDATOR_SEED) as d:
            out = await d([axon, axon], BtDummy(dummy_input=1))
            refused = await d(axon, BtDummy(dummy_input=-1), deserialize=False)
            full = await d(axon, BtDummy(dummy_input=5), deserialize=False)
    assert out == [2, 2] and seen == [VALIDATOR_HOTKEY] * 3
    assert isinstance(full, BtDummy) and isinstance(full.dendrite, bt.TerminalInfo)
    assert full.is_success and full.dendrite.status_code == 200 and full.dummy_output == 6
    assert refused.is_blacklist
    assert refused.dendrite.status_message == "Forbidden. Key is blacklisted: negative."


async def test_streaming_and_timeout_with_bt_synapses() -> None:
    async def forward(synapse: BtTokens) -> AsyncIterator[str]:
        for i in range(synapse.n):
            yield f"t{i}"
        if synapse.n == 0:
            await asyncio.sleep(10)

    async with Axon(seed=MINER_SEED, host="127.0.0.1", port=0).attach(forward) as axon:
        async with Dendrite(seed=VALIDATOR_SEED) as d:
            got = [x async for x in d.call_stream(axon, BtTokens(n=2), deserialize=False)]
            slow = [x async for x in d.call_stream(axon, BtTokens(n=0), timeout=0.4, deserialize=False)]
    assert got[:-1] == [b"t0", b"t1"] and got[-1].is_success
    assert slow[-1].is_timeout
