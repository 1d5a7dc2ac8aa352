"""What the student-data tests share: requests whose students' details hold marker
strings, a look at the database's bytes as an attacker with a dump would have them, and
the ledger as the release before sealing wrote its events."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.eventstore import event_store
from adapters.keys.keyfile import KEY_FILE_SETTING, read_keys
from adapters.keys.nonces import NONCE_BYTES
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from domain.keys import LessonKey
from domain.ports import Part
from domain.sealed import PLAIN, plain_content, plain_parts
from tests.support.command_line import cli_process
from tests.support.projections import wait_until
from tests.support.stores import POSTGRES_URL, Store

PROVIDER = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
MARKERS = {
    "ada": ("MARKER-ADA-IEP", "MARKER-ADA-ACCOMMODATION", "MARKER-ADA-LEVEL"),
    "ben": ("MARKER-BEN-IEP", "MARKER-BEN-ACCOMMODATION", "MARKER-BEN-LEVEL"),
    "cy": ("MARKER-CY-IEP", "MARKER-CY-ACCOMMODATION", "MARKER-CY-LEVEL"),
}


def student(name: str, grade: int = 3) -> dict[str, Any]:
    iep, accommodation, level = MARKERS[name]
    return {
        "id": f"student-{name}",
        "grade": grade,
        "readingLevel": level,
        "iepGoals": [iep],
        "accommodations": [accommodation],
    }


def request(ledger: LessonLedger, slot: str, *names: str, day: str = "2025-09-08") -> UUID:
    """A lesson for these students; its id."""
    result = ledger.request_lesson(
        provider_id=PROVIDER,
        school_id="school-1",
        lesson_date=day,
        time_slot=slot,
        request_id=f"r-{slot}-{day}",
        actor="teacher",
        details={"students": [student(n) for n in names], "subject": "Reading"},
    )
    return result.lesson_id


def parts(ledger: LessonLedger, lesson_id: UUID) -> list[object]:
    """The student ids of a lesson's parts, as read: None for an erased one."""
    state = ledger.get_lesson(lesson_id)
    assert state is not None and state.students is not None
    return [part and part["id"] for part in state.students]


def erased_by_the_cli_while_kept(ledger: LessonLedger, url: str) -> None:
    """The CLI erases Ada while `ledger`'s process has her key in memory (for an hour):
    once it knows, her earlier lesson reads as erased, Ben's part of it stays, and her
    next lesson is sealed under a new key and reads back."""
    keys = sealer_of(ledger).keys
    keys.cache_seconds = 3600.0  # only hearing of the erasure can make it forget the key
    earlier = request(ledger, "08:30-09:00", "ada", "ben")
    assert parts(ledger, earlier) == ["student-ada", "student-ben"]
    ada_key = keys.key_for(sealer_of(ledger).student_owner("student-ada")).key_id

    erased = cli_process(
        "students", "erase", "student-ada", "--reason", "request", "--database-url", url
    )

    assert erased.exit_code == 0, erased.stderr
    wait_until(lambda: keys.key(ada_key) is None, 10, "the erasure to be heard of")
    assert parts(ledger, earlier) == [None, "student-ben"]
    later = request(ledger, "09:00-09:30", "ada")
    assert parts(ledger, later) == ["student-ada"]


def generate(ledger: LessonLedger, lesson_id: UUID, *quoting: str) -> None:
    """The lesson generated, its content quoting these markers (as a model might)."""
    state = ledger.get_lesson(lesson_id)
    assert state is not None
    content = {"lesson": {"title": "Reading", "notes": list(quoting)}, "worksheet": {}}
    ledger.record_generation(lesson_id=lesson_id, attempt=state.attempt, content=content, model="m")


def all_markers(*names: str) -> list[str]:
    return [marker for name in names for marker in MARKERS[name]]


def database_bytes(store: Store) -> bytes:
    """The whole database as a dump has it: the SQLite file and its WAL, or pg_dump."""
    if store.kind == "sqlite":
        path = store.database.path
        return b"".join(
            open(name, "rb").read() for name in (path, f"{path}-wal") if os.path.exists(name)
        )
    dump = subprocess.run(
        ["pg_dump", "--schema", store.database.schema, "--data-only", POSTGRES_URL],
        capture_output=True,
        check=True,
        timeout=120,
    )
    # bytea columns (the events' states) are dumped as hex: read them as their bytes too.
    hexes = re.findall(rb"\\\\?x([0-9a-f]+)", dump.stdout)
    return dump.stdout + b"\n".join(bytes.fromhex(h.decode()) for h in hexes if len(h) % 2 == 0)


def everything_openable(store: Store) -> bytes:
    """What every sealed text in the database opens to, tried with every data key that
    remains (each layer with each key, twice over), and every key's bytes: what an
    attacker holding the database and the key file can read."""
    keys = _remaining_keys(store)
    found: list[bytes] = []
    for blob in _sealed_texts(database_bytes(store)):
        for layer in _open_with_any(blob, keys):
            found.append(layer)
            found += _open_with_any(layer, keys)
    return b"\n".join(found)


def _remaining_keys(store: Store) -> list[AESGCM]:
    keys = read_keys(Path(os.environ[KEY_FILE_SETTING]))
    wrapping = AESGCM(keys["key_encryption_key"])
    rows = store.query(f"SELECT key_id, wrapped FROM {_table(store, 'data_keys')}")
    opened = []
    for key_id, wrapped in rows:
        data = base64.b64decode(str(wrapped))
        raw = wrapping.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], str(key_id).encode())
        opened.append(AESGCM(raw))
    return opened


def _table(store: Store, name: str) -> str:
    return name if store.kind == "sqlite" else f'"{store.database.schema}".{name}'


def _sealed_texts(data: bytes) -> list[bytes]:
    """Every base64 text long enough to hold a nonce and a tag."""
    found = []
    for text in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", data):
        try:
            found.append(base64.b64decode(text, validate=True))
        except ValueError:  # not base64 after all
            continue
    return found


def _open_with_any(blob: bytes, keys: Sequence[AESGCM]) -> list[bytes]:
    opened = []
    for key in keys:
        for aad in _aads():
            try:
                opened.append(key.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad))
            except (InvalidTag, ValueError):
                continue
    return opened


_LESSON_IDS: list[bytes] = []


def _aads() -> list[bytes]:
    return _LESSON_IDS


def known_lessons(*lesson_ids: UUID) -> None:
    """The lessons whose ids the attacker knows (they are stored in the clear)."""
    _LESSON_IDS[:] = [lesson_id.bytes for lesson_id in lesson_ids]


class PlainStudentData:
    """The release before sealing: parts and content written in plain text, unkeyed
    fingerprints (for fixtures of what users' databases hold)."""

    print_key = b""

    def seal_students(self, requests: Sequence[tuple[LessonKey, list[Part]]]) -> list[list[Part]]:
        return [plain_parts(students) or [] for _, students in requests]

    def open_students(self, lesson_id: UUID, sealed: Sequence[Part | None]) -> list[Part | None]:
        return [None if p is None else p.get(PLAIN, p) for p in sealed]

    def seal_content(
        self, lesson_id: UUID, lesson_date: date, students: Sequence[Part], content: Part
    ) -> Part:
        return plain_content(content) or {}

    def open_content(self, lesson_id: UUID, sealed: Part) -> Part | None:
        opened: Part | None = sealed.get(PLAIN, sealed)
        return opened

    def close(self) -> None:
        pass


def as_before_sealing(ledger: LessonLedger) -> LessonLedger:
    """The same store, written as the release before sealing wrote it."""
    event_store(ledger)  # an opened ledger
    return LessonLedger(ledger.slots, PlainStudentData())
