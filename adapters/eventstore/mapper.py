"""The ledger's event mapper: the library's Mapper, with orjson for the lesson slot's
events, and the library's own transcoder for everything else and every doubtful case.

A LessonSlot event's state is a flat dict: its top-level values are plain JSON or one
of the transcoder's registered types (the timestamp, the lesson date); its free-form
fields (details, students, content, as_sent) are plain JSON, which the commands check
(domain/commands.py). For such a state orjson writes the same bytes as the library's
JSON transcoder, the typed values in the transcoder's own `{"_type_", "_data_"}` form,
about three times as fast, and reads them about a quarter faster (the checks below
included). Stored events keep one format: either side reads what the other wrote.

Writing falls back to the transcoder when a value is not plain JSON (orjson is told to
refuse dates, dataclasses and anything it does not know). Reading falls back when the
fast reading could differ: a `"_type_"` below the top level (an event whose content
held a typed value), a number of 19 digits or more (orjson reads one beyond 64 bits
as a float), or text orjson refuses (NaN, a lone surrogate). Events of a class with
a `class_version` above 1 are written with it, and read through the class's own
`upcast_vN_vM` methods, as the library's mapper does; a mapper with a cipher or
compressor always goes the library's way.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    Transcoding,
)
from eventsourcing.utils import get_topic, resolve_topic

from domain.lesson import LessonSlot

_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_TAG = b'"_type_"'
# orjson reads an integer outside 64 bits (signed below zero, unsigned above) as a
# float; 19 digits is the shortest such (-9223372036854775809). Found by mapping every
# digit to "0" and anything else to ".": two C passes, where a regular expression
# took four times orjson's reading.
_DIGITS_ONLY = bytes(ord("0") if b"0"[0] <= byte <= b"9"[0] else ord(".") for byte in range(256))
_LONG_NUMBER = b"0" * 19


class LedgerMapper(Mapper[UUID]):
    """Maps the ledger's events to stored events and back (see the module docstring)."""

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        json = transcoder if isinstance(transcoder, JSONTranscoder) else None
        self._fast = json is not None and not compressor and not cipher
        self._types: dict[type, Transcoding] = json.types if json else {}
        self._names: dict[str, Transcoding] = json.names if json else {}

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = self._fast_state(domain_event)
        if state is None:
            return super().to_stored_event(domain_event)
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:  # last, where the library's mapper puts it
            state["class_version"] = class_version
        try:
            data = orjson.dumps(self._tagged(state), default=_not_plain, option=_ORJSON_OPTIONS)
        except (TypeError, _NotPlain):
            return super().to_stored_event(domain_event)
        return StoredEvent(originator_id, originator_version, get_topic(type(domain_event)), data)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        cls = resolve_topic(stored_event.topic)
        state = self._read(cls, stored_event.state)
        if state is None:
            return super().to_domain_event(stored_event)
        originator_id = stored_event.originator_id
        state["originator_id"] = (
            originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
        )
        state["originator_version"] = stored_event.originator_version
        domain_event: DomainEventProtocol[UUID] = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        return domain_event

    # Writing.

    def _fast_state(self, domain_event: object) -> dict[str, Any] | None:
        if not self._fast or not isinstance(domain_event, LessonSlot.Event):
            return None
        return dict(vars(domain_event))

    def _tagged(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state with its top-level typed values in the transcoder's tagged form."""
        types = self._types
        for key, value in state.items():
            transcoding = types.get(type(value))
            if transcoding is not None:
                data = transcoding.encode(value)
                if type(data) is not str:  # a transcoding of transcodings: not flat
                    raise _NotPlain
                state[key] = {"_type_": transcoding.name, "_data_": data}
        return state

    # Reading.

    def _read(self, cls: type, data: bytes) -> dict[str, Any] | None:
        """The state read by orjson, or None where the library must read it."""
        if not self._fast or not isinstance(cls, type) or not issubclass(cls, LessonSlot.Event):
            return None
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if type(state) is not dict:
            return None
        names, tags = self._names, 0
        for key, value in state.items():
            if type(value) is dict and len(value) == 2 and "_type_" in value and "_data_" in value:
                transcoding = names.get(value["_type_"])
                if transcoding is None:
                    return None  # the library's reading names the unknown type
                state[key] = transcoding.decode(value["_data_"])
                tags += 1
        if data.count(_TAG) != tags or _LONG_NUMBER in data.translate(_DIGITS_ONLY):
            return None
        _upcast(cls, state)
        return state


def _upcast(cls: type, state: dict[str, Any]) -> None:
    """The state of an older version of `cls` brought up to its current version, by the
    class's own `upcast_vN_vM` static methods, as the library's mapper does."""
    from_version: int = state.pop("class_version", 1)
    class_version: int = getattr(cls, "class_version", 1)
    while from_version < class_version:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
        from_version += 1


class _NotPlain(Exception):
    """A value orjson must not write (the library's transcoder writes it instead)."""


def _not_plain(value: object) -> None:
    raise _NotPlain(type(value).__name__)
