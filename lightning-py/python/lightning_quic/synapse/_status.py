"""Status codes and messages, as bittensor 10.5's axon and dendrite set them, and how a
refusal travels on the wire.

A miner's refusal is a btlightning failure: ``success: false`` with ``error`` =
``"<code> <message>"`` (``"403 Forbidden. Key is blacklisted: unknown hotkey."``). The
dendrite turns it back into ``status_code`` and ``status_message``; an ``error`` without a
code (a plain btlightning miner's ``request processing failed``) maps by its text.
"""

from __future__ import annotations

import re
from typing import Tuple

__all__ = ["encode_refusal", "decode_refusal", "SUCCESS"]

SUCCESS = (200, "Success")

_CODED = re.compile(r"^([1-5][0-9][0-9]) (.*)$", re.DOTALL)

# btlightning's (and our endpoint's) generic wire errors, by what bittensor would have said.
_GENERIC = {
    "unrecognized synapse type": 404,
    "authentication failed": 401,
    "handler timed out": 408,
    "invalid request format": 400,
    "request processing failed": 500,
    "stream processing failed": 500,
    "internal serialization error": 500,
}


def encode_refusal(code: int, message: str) -> str:
    """The ``error`` text of a refusal with a bittensor status code."""
    return f"{code} {message}"


def decode_refusal(error: str) -> Tuple[int, str]:
    """``(status_code, status_message)`` for a failed answer's ``error`` text."""
    m = _CODED.match(error)
    if m:
        return int(m.group(1)), m.group(2)
    return _GENERIC.get(error, 500), error
