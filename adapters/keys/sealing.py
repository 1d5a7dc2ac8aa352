"""The ledger's `StudentData` port (domain/ports.py) with AES-GCM from `cryptography` and
the data keys of adapters/keys/data_keys.py.

- A student's part of a request: sealed under the student's key, then under the lesson
  date's key, both bound to the lesson (AES-GCM's associated data is the lesson id):
  `{"keys": [student key id, date key id], "sealed": base64}`. Destroying the student's
  key erases the student (every lesson); destroying the date's key erases that day's parts
  (retention). A student's key belongs to `student:<HMAC of the student id>`, so erasure
  finds it from the id, and nothing stored names the student.
- A lesson's content: sealed under a random key of its own, which is sealed under each
  student's key in turn and then the date's (every one is needed to open it):
  `{"keys": [...], "key": base64, "sealed": base64}`. Erasing any student of the lesson,
  or its date, makes the content unreadable too.
- `{"plain": ...}`: written before sealing existed; read as it is, until
  `lesson-ledger students encrypt-existing` seals it.
"""

from __future__ import annotations

import base64
import binascii
import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.keys.data_key import DataKey
from adapters.keys.data_keys import DataKeys
from adapters.keys.nonces import NONCE_BYTES, NONCES
from domain.digests import KeyedHash
from domain.keys import LessonKey
from domain.ledger import LessonLedger
from domain.ports import Part
from domain.sealed import PLAIN

STUDENT_OWNER = "student:"
DATE_OWNER = "date:"


def day_owner(day: date) -> str:
    """The owner name of a lesson date's key."""
    return DATE_OWNER + day.isoformat()


_FOUND_KEYS = 100_000
"""At most this many keys kept by student id and lesson date."""


@dataclass
class _Found:
    """Keys found while every erasure was heard of, in the data keys' `generation`:
    usable while it lasts (an erasure heard of, or a listener's end, changes it)."""

    generation: int
    keys: dict[str | date, DataKey] = field(default_factory=dict)


class Closable(Protocol):
    def close(self) -> None: ...


class Sealer:
    """Seals and opens students' parts and lessons' content."""

    def __init__(
        self,
        keys: DataKeys,
        *,
        print_key: bytes,
        student_key: bytes,
        listener: Closable | None = None,
    ) -> None:
        """`listener`: what tells `keys` of erasures elsewhere, closed with the sealer."""
        self.keys = keys
        self._listener = listener
        self._print_key = print_key
        self._student_hash = KeyedHash(student_key)
        self._owners: dict[str, str] = {}
        self._days: dict[date, str] = {}
        """The key owners of the days whose keys this process has made, or found made
        (every day of a month at once)."""
        self._found = _Found(-1)
        """The keys sealing found, by student id and lesson date: a request of students
        met before finds its keys in a look-up each, not through their owners' names and
        the data keys' cache (a fifth of what sealing cost a request, measured). Only
        while erasures are heard of: otherwise each key has its own short time."""
        self.keys_with_events = False
        """Whether students' keys made while sealing are stored by the append of the
        events sealed under them (set by `open_ledger`, whose recorder stores them:
        adapters/keys/unsaved.py)."""

    @property
    def print_key(self) -> bytes:
        return self._print_key

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.keys.close()

    def student_owner(self, student_id: str) -> str:
        """The owner name of a student's key: a keyed hash of the id, never the id."""
        owner = self._owners.get(student_id)
        if owner is None:
            owner = STUDENT_OWNER + self._student_hash.hexdigest(student_id.encode())
            if len(self._owners) < 100_000:
                self._owners[student_id] = owner
        return owner

    # Students' parts.

    def seal_students(
        self, requests: Sequence[tuple[LessonKey, list[Part]]], *, keys_stored_now: bool = False
    ) -> list[list[Part]]:
        """Each request's students' parts sealed under the student's key, then the day's;
        every key they need is found at once.

        A single request's new student gets a key that this thread's next append stores
        (`keys_with_events`), unless `keys_stored_now` (events written otherwise: the
        migration's). A batch's keys are stored at once, by a statement of their own: one
        commit for dozens of requests, and batches of one roster racing would each store
        a key for every student. So is a day's key: retention destroys it alone."""
        with_events = self.keys_with_events and not keys_stored_now and len(requests) == 1
        keys = self._found_before(requests, with_events)
        if keys is None:
            keys = self._keys_of(requests, with_events)
        nonces = iter(NONCES.take(2 * sum(len(parts) for _, parts in requests)))
        sealed: list[list[Part]] = []
        for lesson, parts in requests:
            day, aad = keys[lesson.lesson_date], lesson.lesson_id.bytes
            sealed_parts: list[Part] = []
            for part in parts:
                student = keys[str(part["id"])]
                inner = _seal_with(student.cipher, orjson.dumps(part), aad, next(nonces))
                outer = _seal_with(day.cipher, inner, aad, next(nonces))
                sealed_parts.append({"keys": [student.key_id, day.key_id], "sealed": _text(outer)})
            sealed.append(sealed_parts)
        return sealed

    def _found_before(
        self, requests: Sequence[tuple[LessonKey, list[Part]]], with_events: bool
    ) -> Mapping[str | date, DataKey] | None:
        """Every key these requests need, by student id and lesson date, as sealing found
        them before (nothing forgotten since); None when one is missing."""
        found = self._found
        if found.generation != self.keys.generation:
            return None
        keys = found.keys
        for lesson, parts in requests:
            if lesson.lesson_date not in keys or any(str(p["id"]) not in keys for p in parts):
                return None
        if with_events and self.keys.unsaved is not None:
            # As `keys_for` does: keys held for a command that saved nothing are let go.
            self.keys.unsaved.hold((), found.generation)
        return keys

    def _keys_of(
        self, requests: Sequence[tuple[LessonKey, list[Part]]], with_events: bool
    ) -> dict[str | date, DataKey]:
        """Every key these requests need, by student id and lesson date, found (or made)
        by the data keys; kept for the next requests unless one is not stored yet."""
        generation = self.keys.generation
        day_of = self._day_owners({key.lesson_date for key, _ in requests})
        student_of = {
            student_id: self.student_owner(student_id)
            for student_id in {str(part["id"]) for _, parts in requests for part in parts}
        }
        by_owner = self.keys.keys_for(day_of.values())
        by_owner.update(self.keys.keys_for(student_of.values(), unsaved=with_events))
        keys: dict[str | date, DataKey] = {day: by_owner[owner] for day, owner in day_of.items()}
        keys.update((student_id, by_owner[owner]) for student_id, owner in student_of.items())
        held = with_events and self.keys.unsaved is not None and self.keys.unsaved.rows()
        if not held:  # a key made for this thread's append is kept once it is stored
            self._keep(keys, generation)
        return keys

    def _keep(self, keys: Mapping[str | date, DataKey], generation: int) -> None:
        """Keep keys found at `generation` for the next requests, while every erasure is
        heard of and nothing was forgotten since (they may have been read before a
        destruction; and told since, the generation would have changed)."""
        if generation != self.keys.generation or not self.keys.told_of_erasures:
            return
        found = self._found
        if found.generation != generation:
            found = self._found = _Found(generation)
        if len(found.keys) < _FOUND_KEYS:
            found.keys.update(keys)

    def _day_owners(self, dates: set[date]) -> dict[date, str]:
        """The key owners of these days. The first time this process meets a month, the
        keys of all its days are made at once: one statement a month, not one (a commit)
        a day."""
        known = self._days
        if not dates <= known.keys():
            months = sorted({(day.year, day.month) for day in dates if day not in known})
            month_days = [
                date(year, month, day)
                for year, month in months
                for day in range(1, calendar.monthrange(year, month)[1] + 1)
            ]
            self.keys.keys_for(day_owner(day) for day in month_days)
            known.update((day, day_owner(day)) for day in month_days)
        return {day: known[day] for day in dates}

    def open_students(self, lesson_id: UUID, sealed: Sequence[Part | None]) -> list[Part | None]:
        return [self._open_part(lesson_id, part) for part in sealed]

    def _open_part(self, lesson_id: UUID, part: Part | None) -> Part | None:
        if part is None:
            return None
        if PLAIN in part:
            opened: Part = part[PLAIN]
            return opened
        student_id, day_id = part["keys"]
        student, day = self.keys.key(student_id), self.keys.key(day_id)
        if student is None or day is None:
            return None
        aad = lesson_id.bytes
        inner = _open(day, base64.b64decode(part["sealed"]), aad)
        opened = orjson.loads(_open(student, inner, aad))
        return opened

    # Content.

    def seal_content(
        self, lesson_id: UUID, lesson_date: date, students: Sequence[Part], content: Part
    ) -> Part:
        aad = lesson_id.bytes
        content_key = AESGCM.generate_key(bit_length=256)
        # An erased student's details reached no generator: their key has no part in it.
        keys = [key for key in map(self._student_key_of, students) if key is not None]
        keys.append(self.keys.key_for(day_owner(lesson_date)))
        wrapped = content_key
        for key in keys:
            wrapped = _seal(key, wrapped, aad)
        sealed = _seal_with(AESGCM(content_key), orjson.dumps(content), aad, NONCES.one())
        return {"keys": [k.key_id for k in keys], "key": _text(wrapped), "sealed": _text(sealed)}

    def _student_key_of(self, part: Part) -> DataKey | None:
        """The key a student's (sealed, or plain) part belongs to; None once erased."""
        if PLAIN in part:
            return self.keys.key_for(self.student_owner(str(part[PLAIN]["id"])))
        return self.keys.key(part["keys"][0])

    def open_content(self, lesson_id: UUID, sealed: Part) -> Part | None:
        if PLAIN in sealed:
            opened: Part = sealed[PLAIN]
            return opened
        aad = lesson_id.bytes
        wrapped = base64.b64decode(sealed["key"])
        for key_id in reversed(sealed["keys"]):
            key = self.keys.key(key_id)
            if key is None:
                return None
            wrapped = _open(key, wrapped, aad)
        data = _open_with(AESGCM(wrapped), base64.b64decode(sealed["sealed"]), aad)
        content: Part = orjson.loads(data)
        return content


def _seal(key: DataKey, data: bytes, aad: bytes) -> bytes:
    return _seal_with(key.cipher, data, aad, NONCES.one())


def _seal_with(cipher: AESGCM, data: bytes, aad: bytes, nonce: bytes) -> bytes:
    return nonce + cipher.encrypt(nonce, data, aad)


def _open(key: DataKey, data: bytes, aad: bytes) -> bytes:
    return _open_with(key.cipher, data, aad)


def _open_with(cipher: AESGCM, data: bytes, aad: bytes) -> bytes:
    try:
        return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ValueError("sealed data does not open with its keys: it was altered") from None


def _text(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def sealer_of(ledger: LessonLedger) -> Sealer:
    """The sealer under a ledger that `open_ledger` opened."""
    if not isinstance(ledger.student_data, Sealer):
        raise TypeError("the ledger was not opened with the ledger's keys (adapters.open_ledger)")
    return ledger.student_data
