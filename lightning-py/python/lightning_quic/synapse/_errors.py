"""The exceptions a subnet's functions may raise, named and coded as bittensor 10.5's.

Raised from ``forward_fn`` (or ``blacklist_fn``, ``priority_fn``, ``verify_fn``), a
``SynapseException`` answers with its code and its own message; any other exception
answers ``500 Internal Server Error #<id>`` and is logged with its traceback, which never
leaves the miner. bittensor's own exception classes map the same way (by class name).
"""

from __future__ import annotations

from typing import Tuple
import uuid

__all__ = [
    "SynapseException",
    "BlacklistedException",
    "PriorityException",
    "NotVerifiedException",
    "UnknownSynapseError",
    "SynapseParsingError",
    "InvalidRequestNameError",
    "status_for_exception",
]


class SynapseException(Exception):
    """Base of the refusals whose message the peer sees (status 500 unless a subclass)."""


class BlacklistedException(SynapseException):
    """The blacklist refused the caller (403)."""


class PriorityException(SynapseException):
    """The request could not be scheduled (503)."""


class NotVerifiedException(SynapseException):
    """``verify_fn`` refused the request (401)."""


class UnknownSynapseError(SynapseException):
    """No handler for the synapse (404)."""


class SynapseParsingError(SynapseException):
    """The request's data did not validate into the synapse class (400)."""


class InvalidRequestNameError(SynapseException):
    """The request named no valid synapse (400)."""


# By class name, so that bittensor's own exception classes map the same way.
_CODES = {
    "PriorityException": 503,
    "UnknownSynapseError": 404,
    "BlacklistedException": 403,
    "NotVerifiedException": 401,
    "InvalidRequestNameError": 400,
    "SynapseParsingError": 400,
}


def status_for_exception(exc: BaseException) -> Tuple[int, str, bool]:
    """``(status_code, status_message, expected)`` for an exception raised while serving,
    as bittensor's axon sets them; ``expected`` is False when the message is a generic one
    whose cause must be logged (the exception's text stays local)."""
    names = [c.__name__ for c in type(exc).__mro__]
    if "SynapseException" in names:
        for name in names:
            if name in _CODES:
                return _CODES[name], str(exc), True
        return 500, str(exc), True
    return 500, f"Internal Server Error #{uuid.uuid4()}", False
