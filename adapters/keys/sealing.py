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
import hmac
import os
from collections.abc import Sequence
from datetime import date
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.keys.data_keys import NONCE_BYTES, DataKey, DataKeys
from domain.keys import LessonKey
from domain.ledger import LessonLedger
from domain.ports import Part
from domain.sealed import PLAIN

STUDENT_OWNER = "student:"
DATE_OWNER = "date:"


class Sealer:
    """Seals and opens students' parts and lessons' content."""

    def __init__(self, keys: DataKeys, *, print_key: bytes, student_key: bytes) -> None:
        self.keys = keys
        self._print_key = print_key
        self._student_key = student_key
        self._owners: dict[str, str] = {}

    @property
    def print_key(self) -> bytes:
        return self._print_key

    def close(self) -> None:
        self.keys.sql.close()

    def student_owner(self, student_id: str) -> str:
        """The owner name of a student's key: a keyed hash of the id, never the id."""
        owner = self._owners.get(student_id)
        if owner is None:
            digest = hmac.digest(self._student_key, student_id.encode(), "sha256")
            owner = STUDENT_OWNER + digest.hex()
            if len(self._owners) < 100_000:
                self._owners[student_id] = owner
        return owner

    # Students' parts.

    def seal_students(self, lesson: LessonKey, students: list[Part]) -> list[Part]:
        day = self.keys.key_for(DATE_OWNER + lesson.lesson_date.isoformat())
        aad = lesson.lesson_id.bytes
        return [self._seal_part(part, day, aad) for part in students]

    def _seal_part(self, part: Part, day: DataKey, aad: bytes) -> Part:
        student = self.keys.key_for(self.student_owner(str(part["id"])))
        inner = _seal(student, orjson.dumps(part), aad)
        return {"keys": [student.key_id, day.key_id], "sealed": _text(_seal(day, inner, aad))}

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
        keys.append(self.keys.key_for(DATE_OWNER + lesson_date.isoformat()))
        wrapped = content_key
        for key in keys:
            wrapped = _seal(key, wrapped, aad)
        sealed = _seal_with(AESGCM(content_key), orjson.dumps(content), aad)
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
    return _seal_with(key.cipher, data, aad)


def _seal_with(cipher: AESGCM, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + cipher.encrypt(nonce, data, aad)


def _open(key: DataKey, data: bytes, aad: bytes) -> bytes:
    return _open_with(key.cipher, data, aad)


def _open_with(cipher: AESGCM, data: bytes, aad: bytes) -> bytes:
    try:
        return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ValueError("sealed data does not open with its keys: it was altered") from None


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sealer_of(ledger: LessonLedger) -> Sealer:
    """The sealer under a ledger that `open_ledger` opened."""
    if not isinstance(ledger.student_data, Sealer):
        raise TypeError("the ledger was not opened with the ledger's keys (adapters.open_ledger)")
    return ledger.student_data
