"""Reading a bittensor-shaped metagraph: who may call a miner, and where the miners are.

Anything with ``hotkeys``, ``validator_permit``, ``S`` (total stake) and ``axons`` works
(lists, numpy arrays or torch tensors). We never contact a chain: the application syncs its
metagraph, and these functions re-read the object each time they are called.
"""

from __future__ import annotations

from typing import Any, List, Set

__all__ = ["permitted_validators", "serving_axons"]


def permitted_validators(metagraph: Any, min_stake: float = 0.0) -> Set[str]:
    """The hotkeys with a validator permit and at least ``min_stake`` total stake."""
    hotkeys = list(metagraph.hotkeys)
    permits = list(metagraph.validator_permit)
    stakes = list(metagraph.S)
    if not len(hotkeys) == len(permits) == len(stakes):
        raise ValueError(
            f"metagraph lists differ in length: {len(hotkeys)} hotkeys, "
            f"{len(permits)} permits, {len(stakes)} stakes"
        )
    return {
        str(hk)
        for hk, permit, stake in zip(hotkeys, permits, stakes)
        if bool(permit) and float(stake) >= min_stake
    }


def serving_axons(metagraph: Any) -> List[Any]:
    """The metagraph's axons that serve (an IP other than ``0.0.0.0`` and a port),
    IPv4 or IPv6."""
    out = []
    for axon in metagraph.axons:
        ip = str(getattr(axon, "ip", "") or "")
        port = int(getattr(axon, "port", 0) or 0)
        if ip and ip not in ("0.0.0.0", "::") and port > 0:
            out.append(axon)
    return out
