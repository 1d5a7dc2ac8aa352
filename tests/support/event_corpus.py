"""Writes a release's event corpus: every event type in every state the release writes it
in, as stored (topic and state bytes, from SQLite and from PostgreSQL), with the state each
slot reaches, its read-model row, its history, and how commands on it are answered.

`make event-corpus` runs it for the current release (the version in pyproject.toml) into
tests/events/corpus/<release>/, leaving other releases' corpora alone; tests/events/ loads
every corpus with the current code. It uses only the ledger's public API (and SQL to read
the stored rows), so it also runs against an older release's code:

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python tests/support/event_corpus.py --release 0.1.0 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

PROVIDER = "3b4c5d6e-7f80-4912-a3b4-c5d6e7f80912"
POSTGRES_URL = os.environ.get(
    "LESSON_LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DETAILS = {
    "students": [
        {
            "id": "corpus-student-1",
            "grade": 3,
            "readingLevel": "M",
            "iepGoals": ["reads two-syllable words aloud"],
            "accommodations": ["extra time"],
        },
        {"id": "corpus-student-2", "grade": 4},
    ],
    "subject": "Reading",
    "subjectType": "ela",
    "teacherRole": "resource",
    "topic": "short vowels",
    "duration": 30,
    "focusSkills": ["decoding"],
}
CONTENT = {
    "lesson": {"title": "Short vowels", "duration": 30},
    "worksheet": {"title": "Practice", "items": [{"prompt": "cat", "answer": "a"}]},
    "metadata": {"model": "corpus-model", "generated_at": "2025-09-01T08:00:00+00:00"},
}
DATA_KEY_COLUMNS = "key_id, owner, wrapped, kek_id, created_at"
KEY_FILE = "keys.json"
"""The key file a corpus was written with (test keys, kept with the corpus)."""
Step = tuple[str, dict[str, Any]]
"""A ledger call: its method's name and keyword arguments (ids as text)."""


def key(slot: str | None, school: str = "corpus-school") -> dict[str, Any]:
    return {
        "provider_id": PROVIDER,
        "school_id": school,
        "lesson_date": "2025-09-05",
        "time_slot": slot,
    }


LIFECYCLE = key("08:30-09:00")
STEPS: list[Step] = [
    # A slot through every command and every way a command is turned away.
    ("request_lesson", {**LIFECYCLE, "request_id": "c-1", "actor": "alice",
                        "details": DETAILS, "correlation_id": "week-36"}),
    ("request_lesson", {**LIFECYCLE, "time_slot": "8:30 - 9:00", "request_id": "c-2",
                        "actor": "bob"}),
    ("record_generation", {"lesson": LIFECYCLE, "attempt": 1, "content": CONTENT,
                           "model": "corpus-model", "actor": "worker-1"}),
    ("regenerate", {"lesson": LIFECYCLE, "request_id": "c-3", "actor": "alice",
                    "reason": "too long"}),
    ("record_generation", {"lesson": LIFECYCLE, "attempt": 1, "content": CONTENT,
                           "model": "corpus-model", "actor": "worker-2"}),
    ("record_failure", {"lesson": LIFECYCLE, "attempt": 2, "reason": "model timed out",
                        "actor": "worker-1"}),
    ("cancel", {"lesson": LIFECYCLE, "request_id": "c-4", "actor": "alice",
                "reason": "student absent"}),
    ("regenerate", {"lesson": LIFECYCLE, "request_id": "c-5", "actor": "alice"}),
    ("request_lesson", {**LIFECYCLE, "request_id": "c-6", "actor": "carol",
                        "details": {**DETAILS, "duration": 45}}),
    ("request_lesson", {**LIFECYCLE, "request_id": "c-6", "actor": "carol",
                        "details": DETAILS}),
    ("cancel", {"lesson": LIFECYCLE, "request_id": "c-7", "actor": "carol"}),
    ("cancel", {"lesson": LIFECYCLE, "request_id": "c-8", "actor": "carol"}),
    # A request without details, an on-demand lesson, a batch with a duplicate.
    ("request_lesson", {**key("10:00-10:30"), "request_id": "bare-1", "actor": "dan"}),
    ("request_lesson", {**key(None), "kind": "on_demand", "request_id": "od-1",
                        "actor": "erin", "details": DETAILS}),
    ("request_batch", {"items": [
        {**key("11:00-11:30"), "request_id": "b-1", "actor": "cal", "details": DETAILS},
        {**key("11:30-12:00"), "request_id": "b-2", "actor": "cal"},
        {**key("11:00 - 11:30"), "request_id": "b-3", "actor": "cal"},
    ], "mode": "partial", "batch_id": "batch-7"}),
    # The old table's rows: with and without content, a start time alone, `structured`,
    # and one colliding with a lesson the ledger holds.
    ("import_lessons", {"rows": [
        {"id": "legacy-1", **key("08:00", "legacy-school"), "content": json.dumps(CONTENT),
         "created_at": "2025-08-01T10:00:00+00:00", "updated_at": "2025-08-01T10:05:00+00:00"},
        {"id": "legacy-2", **key("13:00-13:30", "legacy-school"), "content": None},
        {"id": "legacy-3", **key("structured", "legacy-school")},
        {"id": "legacy-4", **key("10:00-10:30")},
    ], "batch_id": "import-1"}),
]  # fmt: skip
PROBES: list[Step] = [
    # Commands on the slots once they are old: answered as on new ones.
    ("request_lesson", {**LIFECYCLE, "request_id": "c-6", "actor": "carol",
                        "details": {**DETAILS, "duration": 45}}),
    ("request_lesson", {**LIFECYCLE, "request_id": "p-1", "actor": "frank"}),
    ("request_lesson", {**LIFECYCLE, "request_id": "p-2", "actor": "grace"}),
    ("record_generation", {"lesson": LIFECYCLE, "attempt": 4, "content": CONTENT,
                           "model": "corpus-model", "actor": "worker-1"}),
    ("regenerate", {"lesson": LIFECYCLE, "request_id": "p-3", "actor": "frank"}),
    ("record_failure", {"lesson": key("10:00-10:30"), "attempt": 1,
                        "reason": "no details", "actor": "worker-1"}),
    ("request_lesson", {**key("11:00-11:30"), "request_id": "b-1", "actor": "cal",
                        "details": DETAILS, "correlation_id": "batch-7"}),
    ("cancel", {"lesson": key("08:00", "legacy-school"), "request_id": "p-4",
                "actor": "frank"}),
]  # fmt: skip


def run(ledger: Any, step: Step, lesson_id_for: Callable[..., UUID]) -> Any:
    """One call on the ledger; its answer (or the error it raised) as plain data."""
    method, arguments = step
    kwargs = dict(arguments)
    if "lesson" in kwargs:
        where = kwargs.pop("lesson")
        kwargs["lesson_id"] = lesson_id_for(
            where["provider_id"], where["school_id"], where["lesson_date"], where["time_slot"]
        )
    try:
        result = getattr(ledger, method)(**kwargs)
    except Exception as error:  # the domain's answers: kept by their class's name
        return {"error": type(error).__name__}
    if method in ("request_batch", "import_lessons"):
        return {"items": [_item(i) for i in result.items], "written": result.written}
    return {"outcome": result.outcome, "attempt": result.attempt}


def _item(item: Any) -> dict[str, Any]:
    error = type(item.error).__name__ if item.error is not None else None
    return {"outcome": item.outcome, "attempt": item.attempt, "error": error}


def plain(value: Any) -> Any:
    """JSON's own types: ids, dates and times as text, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def write_store(
    kind: str,
    url: str,
    read_rows: Callable[[], list[tuple[Any, ...]]],
    read_keys: Callable[[], list[tuple[Any, ...]]],
) -> Any:
    """The scripted histories run on one database; its corpus as plain data (with the
    data keys its students' details are sealed under, from releases that seal them)."""
    from adapters import open_ledger
    from domain import lesson_id_for

    ledger = open_ledger(url)
    try:
        answers = [run(ledger, step, lesson_id_for) for step in STEPS]
        events = [
            {
                "position": position,
                "originator_id": str(UUID(str(originator_id))),
                "originator_version": version,
                "topic": topic,
                "state": bytes(state).decode("utf-8"),
            }
            for position, originator_id, version, topic, state in read_rows()
        ]
        lesson_ids = sorted({e["originator_id"] for e in events})
        data_keys = [list(row) for row in read_keys()]
        rows = _rows(url, ledger)
        slots = {
            lesson_id: {
                "state": plain(ledger.get_lesson(UUID(lesson_id))),
                "row": rows.get(lesson_id),
                "history": _history(ledger.history(UUID(lesson_id))),
            }
            for lesson_id in lesson_ids
        }
        probes = [run(ledger, step, lesson_id_for) for step in PROBES]
    finally:
        ledger.close()
    return {
        "store": kind,
        "data_keys": data_keys,
        "steps": plain(STEPS),
        "answers": answers,
        "events": events,
        "slots": slots,
        "probes": plain(PROBES),
        "probe_answers": probes,
    }


def _history(history: Any) -> dict[str, Any]:
    return {
        "entries": [plain(vars(entry)) for entry in history.entries],
        "state": plain(history.state),
    }


def _rows(url: str, ledger: Any) -> dict[str, Any]:
    """Each lesson's row in the read model, caught up to the log."""
    try:
        from adapters.read_model import open_read_model
    except ImportError:  # releases before the adapters were arranged in packages
        from adapters.lessons_view import (  # type: ignore[import-not-found,no-redef]
            open_read_model,
        )
    model = open_read_model(url, ledger=ledger)
    try:
        model.catch_up()
        page = model.list_lessons(limit=500)
        # As the API shows a row: its content opened (releases that seal it).
        opened = getattr(ledger, "readable_content", lambda _, content: content)
        return {
            str(row.lesson_id): {**row.as_json(), "content": opened(row.lesson_id, row.content)}
            for row in page.items
        }
    finally:
        model.close()


def sqlite_corpus(folder: Path) -> Any:
    path = folder / "corpus.db"

    def rows() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(
                "SELECT rowid, originator_id, originator_version, topic, state "
                "FROM stored_events ORDER BY rowid"
            ).fetchall()

    def keys() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'data_keys'").fetchone():
                return []
            return conn.execute(f"SELECT {DATA_KEY_COLUMNS} FROM data_keys").fetchall()

    return write_store("sqlite", f"sqlite:///{path}", rows, keys)


def postgres_corpus() -> Any:
    schema = f"corpus_{uuid.uuid4().hex[:10]}"

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(POSTGRES_URL) as conn:
            return conn.execute(
                f"SELECT notification_id, originator_id, originator_version, topic, state "
                f'FROM "{schema}".lessonledger_events ORDER BY notification_id'
            ).fetchall()

    def keys() -> list[tuple[Any, ...]]:
        with psycopg.connect(POSTGRES_URL) as conn:
            found = conn.execute("SELECT to_regclass(%s)", (f"{schema}.data_keys",)).fetchone()
            if found is None or not found[0]:
                return []
            return conn.execute(f'SELECT {DATA_KEY_COLUMNS} FROM "{schema}".data_keys').fetchall()

    try:
        return write_store("postgresql", f"{POSTGRES_URL}?schema={schema}", rows, keys)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _use_own_keys(path: Path) -> None:
    """The corpus's own keys: its sealed events open with them (releases before sealing
    have no keys)."""
    try:
        from adapters.keys.keyfile import KEY_FILE_SETTING, ensure_keys
    except ImportError:
        return
    ensure_keys(path)
    os.environ[KEY_FILE_SETTING] = str(path)


def current_release() -> str:
    root = Path(__file__).resolve().parents[2]
    with (root / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default=None, help="default: pyproject.toml's version")
    parser.add_argument("--out", type=Path, default=None, help="default: tests/events/corpus/R")
    args = parser.parse_args(argv)
    release = args.release or current_release()
    out = args.out or Path(__file__).resolve().parents[1] / "events" / "corpus" / release
    out.mkdir(parents=True, exist_ok=True)
    _use_own_keys(out / KEY_FILE)
    with tempfile.TemporaryDirectory() as folder:
        corpora = {"sqlite": sqlite_corpus(Path(folder)), "postgresql": postgres_corpus()}
    for kind, corpus in corpora.items():
        text = json.dumps({"release": release, **corpus}, indent=1, sort_keys=True)
        (out / f"{kind}.json").write_text(text + "\n")
    print(f"wrote the corpus of release {release} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
