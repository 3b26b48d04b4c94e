"""bittensor-shaped synapses over Lightning: ``Synapse``, ``StreamingSynapse``, ``Axon``,
``Dendrite``.

A subnet written against bittensor 10.5's ``bt.Synapse`` / ``bt.Axon`` / ``bt.Dendrite``
keeps its synapse classes and functions and changes its two constructors::

    from lightning_quic.synapse import Axon, Dendrite, Synapse

Needs pydantic v2 (a dependency of ``lightning-quic``); subclasses of bittensor's own
``bt.Synapse`` work as well. See the README's "Synapses" section for the wire mapping.
"""

from __future__ import annotations

from ._axon import Axon
from ._dendrite import Dendrite
from ._errors import (
    BlacklistedException,
    InvalidRequestNameError,
    NotVerifiedException,
    PriorityException,
    SynapseException,
    SynapseParsingError,
    UnknownSynapseError,
)
from .._metagraph import permitted_validators, serving_axons
from ._model import StreamingSynapse, Synapse, TerminalInfo

__all__ = [
    "Axon",
    "BlacklistedException",
    "Dendrite",
    "InvalidRequestNameError",
    "NotVerifiedException",
    "PriorityException",
    "StreamingSynapse",
    "Synapse",
    "SynapseException",
    "SynapseParsingError",
    "TerminalInfo",
    "UnknownSynapseError",
    "permitted_validators",
    "serving_axons",
]
