"""The synapse models: ``Synapse``, ``StreamingSynapse``, ``TerminalInfo``, and their wire form.

A synapse crosses the wire as btlightning's request: ``synapse_type`` is the class name and
``data`` holds the subclass's own fields only (never the base fields: the terminal infos,
``name``, ``timeout``, sizes and hashes). Values MessagePack holds natively travel as they
are (``bytes`` stay binary); anything else (datetime, UUID, enums, Decimal, sets...) is
converted the way pydantic's JSON mode converts it, and validated back into the field's type
on the other side.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, FrozenSet, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import to_jsonable_python

__all__ = [
    "BASE_FIELDS",
    "StreamingSynapse",
    "Synapse",
    "TerminalInfo",
    "apply_wire",
    "from_wire",
    "own_fields",
    "set_fields",
    "terminal",
    "terminal_class",
    "to_wire",
]


class TerminalInfo(BaseModel):
    """One end of a call, as bittensor's ``TerminalInfo``: who it is and how the call went.

    On the miner, ``synapse.dendrite.hotkey`` is the hotkey the QUIC handshake
    authenticated. On the validator, ``synapse.dendrite.status_code`` and
    ``status_message`` say how the call ended (200 ``Success``, 408 timeout, 403
    blacklisted...), and ``process_time`` is the round trip in seconds.
    """

    model_config = ConfigDict(validate_assignment=True)

    status_code: Optional[int] = None
    status_message: Optional[str] = None
    process_time: Optional[float] = None
    ip: Optional[str] = None
    port: Optional[int] = None
    version: Optional[int] = None
    nonce: Optional[int] = None
    uuid: Optional[str] = None
    hotkey: Optional[str] = None
    signature: Optional[str] = None


class Synapse(BaseModel):
    """The base of a subnet's request/response model (pydantic v2), shaped like bittensor's.

    Subclass it and declare the fields the validator sends and the miner fills in::

        class Dummy(Synapse):
            dummy_input: int
            dummy_output: Optional[int] = None

            def deserialize(self) -> Optional[int]:
                return self.dummy_output
    """

    model_config = ConfigDict(validate_assignment=True)

    name: Optional[str] = None
    timeout: Optional[float] = 12.0
    total_size: Optional[int] = 0
    header_size: Optional[int] = 0
    dendrite: Optional[TerminalInfo] = Field(default_factory=TerminalInfo)
    axon: Optional[TerminalInfo] = Field(default_factory=TerminalInfo)
    computed_body_hash: Optional[str] = ""

    required_hash_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _set_name(cls, values: Any) -> Any:
        """``name`` is the class name, as in bittensor (it is the route)."""
        if isinstance(values, dict):
            values = {**values, "name": cls.__name__}
        return values

    def deserialize(self) -> Any:
        """What the dendrite returns with ``deserialize=True``; the synapse itself unless a
        subclass overrides it."""
        return self

    @property
    def is_success(self) -> bool:
        """The call ended with status 200."""
        return self.dendrite is not None and self.dendrite.status_code == 200

    @property
    def is_failure(self) -> bool:
        """The call ended with a status other than 200."""
        return self.dendrite is not None and self.dendrite.status_code != 200

    @property
    def is_timeout(self) -> bool:
        """The call timed out (status 408)."""
        return self.dendrite is not None and self.dendrite.status_code == 408

    @property
    def is_blacklist(self) -> bool:
        """The miner's blacklist refused the call (status 403)."""
        return self.dendrite is not None and self.dendrite.status_code == 403


class StreamingSynapse(Synapse):
    """A synapse whose miner answers with a stream of chunks.

    The miner's ``forward_fn`` is a generator (sync or async) of ``bytes`` or ``str``
    chunks; the validator reads them with ``Dendrite.call_stream``. bittensor's
    aiohttp/ASGI hooks (``process_streaming_response``, ``create_streaming_response``) are
    not used.
    """


# The fields of bittensor's and our base classes: never part of `data`, so a caller cannot
# claim a dendrite hotkey, and subclasses of either base map the same way.
BASE_FIELDS: FrozenSet[str] = frozenset(
    {
        "name",
        "timeout",
        "total_size",
        "header_size",
        "dendrite",
        "axon",
        "computed_body_hash",
        "required_hash_fields",
    }
)

_terminal_cache: Dict[tuple, type] = {}


def terminal_class(cls: type, which: str) -> type:
    """The terminal info class a synapse class declares for ``dendrite`` or ``axon`` (ours,
    or bittensor's ``TerminalInfo``), from the field's default or default factory."""
    key = (cls, which)
    found = _terminal_cache.get(key)
    if found is None:
        found = TerminalInfo
        field = cls.model_fields.get(which)  # type: ignore[attr-defined]
        if field is not None:
            factory = field.default_factory
            if isinstance(factory, type) and issubclass(factory, BaseModel):
                found = factory
            elif isinstance(field.default, BaseModel):
                found = type(field.default)
        _terminal_cache[key] = found
    return found


def terminal(synapse: Any, which: str, **values: Any) -> Any:
    """A fresh terminal info for ``synapse.dendrite`` or ``synapse.axon``, of the class the
    synapse uses (ours, or bittensor's ``TerminalInfo`` for a ``bt.Synapse``)."""
    current = getattr(synapse, which, None)
    cls = type(current) if isinstance(current, BaseModel) else TerminalInfo
    return cls(**values)


def set_fields(model: Any, values: Dict[str, Any]) -> None:
    """Sets fields of a pydantic model without validating them again: only for values the
    caller built of the field's type (a terminal info made by :func:`terminal`, an int
    status code...). Marks them set, as an assignment does."""
    model.__dict__.update(values)
    model.__pydantic_fields_set__.update(values)


_own_cache: Dict[type, tuple[str, ...]] = {}


def own_fields(cls: type) -> tuple[str, ...]:
    """The names of the fields a synapse class adds to its base (cached per class)."""
    names = _own_cache.get(cls)
    if names is None:
        names = tuple(n for n in cls.model_fields if n not in BASE_FIELDS)  # type: ignore[attr-defined]
        _own_cache[cls] = names
    return names


# Types the native encoder takes as they are (exact types: subclasses such as str enums go
# through pydantic's JSON conversion, which gives their value).
_PLAIN = (str, int, float, bool, bytes, bytearray, type(None))


def _wire_value(value: Any) -> Any:
    t = type(value)
    if t in _PLAIN:
        return value
    if t is dict:
        return {k if type(k) is str else _wire_value(k): _wire_value(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_wire_value(v) for v in value]
    # datetime, UUID, enums, Decimal, sets, paths, models...: as pydantic's JSON mode.
    return _wire_value(to_jsonable_python(value))


def to_wire(synapse: BaseModel) -> Dict[str, Any]:
    """The ``data`` dict of a synapse: its own fields, dumped by pydantic, MessagePack-ready."""
    fields = own_fields(type(synapse))
    dumped = synapse.model_dump(mode="python", include=set(fields))
    return {k: _wire_value(v) for k, v in dumped.items()}


def from_wire(cls: type, data: Dict[str, Any], base: Optional[Dict[str, Any]] = None) -> Any:
    """Validates a request's ``data`` into a new ``cls``; keys that are not the class's own
    fields (a claimed ``dendrite``, say) are dropped. ``base`` gives base fields (the
    receiver's own terminal infos, timeout) in the same validation. Raises pydantic's
    ``ValidationError``."""
    fields = own_fields(cls)
    values = {k: v for k, v in data.items() if k in fields}
    if base:
        values.update(base)
    return cls.model_validate(values)  # type: ignore[attr-defined]


def apply_wire(synapse: BaseModel, data: Dict[str, Any]) -> None:
    """Updates a synapse's own fields from a response's ``data``, validating each value
    (fields not in the class are ignored, as bittensor's dendrite does)."""
    fields = own_fields(type(synapse))
    updates = {k: v for k, v in data.items() if k in fields}
    if not updates:
        return
    # One validation of the merged fields, so that values converted for the wire (an ISO
    # datetime, a UUID string) come back as their declared types whatever the model config.
    current = synapse.model_dump(mode="python", include=set(fields))
    current.update(updates)
    # The synapse's terminal infos as they are: an instance check, rather than two fresh
    # defaults built and thrown away.
    for name in ("dendrite", "axon"):
        if isinstance(synapse.__dict__.get(name), BaseModel):
            current[name] = synapse.__dict__[name]
    fresh = type(synapse).model_validate(current)
    for k in updates:
        # Set without validating again: the value was just validated.
        synapse.__dict__[k] = getattr(fresh, k)
