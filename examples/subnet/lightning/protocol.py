"""The subnet's synapse, moved to Lightning (the subnet template's Dummy)."""

from typing import Optional

from lightning_quic.synapse import Synapse


class Dummy(Synapse):
    """The validator sends ``dummy_input``; the miner fills in ``dummy_output``."""

    dummy_input: int
    dummy_output: Optional[int] = None

    def deserialize(self) -> Optional[int]:
        """What ``dendrite(..., deserialize=True)`` returns."""
        return self.dummy_output
