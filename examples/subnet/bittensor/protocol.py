"""The subnet's synapse, written against bittensor 10.5 (the subnet template's Dummy)."""

from typing import Optional

import bittensor as bt


class Dummy(bt.Synapse):
    """The validator sends ``dummy_input``; the miner fills in ``dummy_output``."""

    dummy_input: int
    dummy_output: Optional[int] = None

    def deserialize(self) -> Optional[int]:
        """What ``dendrite(..., deserialize=True)`` returns."""
        return self.dummy_output
