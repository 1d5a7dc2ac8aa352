"""Every release's stored events still load, with the current code, forever: each slot
of every corpus (tests/events/corpus/<release>/<store>.json, written by that release)
reaches the state that release recorded, the read model makes the row it made (its
content opened, as the API shows it), history
shows the entries it showed, and commands on the old slots are answered as it answered
them. Each corpus is loaded into SQLite and into PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.eventstore import event_store
from adapters.keys.keyfile import KEY_FILE_SETTING
from adapters.read_model import open_read_model
from domain import LessonLedger, lesson_id_for
from tests.support.event_corpus import DATA_KEY_COLUMNS, KEY_FILE, PROBES, plain, run
from tests.support.stores import Store

CORPORA = sorted(
    path
    for path in (Path(__file__).parent / "corpus").glob("*/*.json")
    if path.stem in ("sqlite", "postgresql")
)


def _name(path: Path) -> str:
    return f"{path.parent.name}-{path.stem}"


def test_the_first_corpus_is_the_format_already_in_users_databases() -> None:
    releases = {path.parent.name for path in CORPORA}
    assert "0.1.0" in releases, "the corpus written by release 0.1.0 must stay"


@pytest.fixture(params=CORPORA, ids=_name)
def corpus(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    path = Path(request.param)
    data: dict[str, Any] = json.loads(path.read_text())
    keys = path.parent / KEY_FILE
    if keys.exists():  # a release that seals students' data: the keys it sealed them with
        monkeypatch.setenv(KEY_FILE_SETTING, str(keys))
    return data


def load(ledger: LessonLedger, corpus: dict[str, Any], store: Store) -> None:
    """The corpus's stored events, byte for byte, in their order, into the ledger's store,
    and the data keys they are sealed under."""
    table = "data_keys" if store.kind == "sqlite" else f'"{store.database.schema}".data_keys'
    for row in corpus.get("data_keys", []):
        store.execute(
            f"INSERT INTO {table} ({DATA_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (owner) DO NOTHING",
            tuple(row),
        )
    stored = [
        StoredEvent(
            originator_id=UUID(event["originator_id"]),
            originator_version=event["originator_version"],
            topic=event["topic"],
            state=event["state"].encode("utf-8"),
        )
        for event in corpus["events"]
    ]
    event_store(ledger).recorder.insert_events(stored)


def test_old_slots_reach_the_recorded_state_row_and_history(
    store: Store, corpus: dict[str, Any]
) -> None:
    ledger = store.open()
    load(ledger, corpus, store)
    for lesson_id, expected in corpus["slots"].items():
        assert plain(ledger.get_lesson(UUID(lesson_id))) == expected["state"], lesson_id
        history = ledger.history(UUID(lesson_id))
        entries = [plain(vars(entry)) for entry in history.entries]
        assert entries == expected["history"]["entries"], lesson_id
        assert plain(history.state) == expected["history"]["state"], lesson_id

    model = open_read_model(store.url, ledger=ledger)
    try:
        model.catch_up()
        rows = {
            str(row.lesson_id): {
                **row.as_json(),
                "content": ledger.readable_content(row.lesson_id, row.content),
            }
            for row in model.list_lessons(limit=500).items
        }
    finally:
        model.close()
    assert rows == {i: s["row"] for i, s in corpus["slots"].items() if s["row"] is not None}


def test_commands_on_old_slots_are_answered_as_the_release_answered_them(
    store: Store, corpus: dict[str, Any]
) -> None:
    ledger = store.open()
    load(ledger, corpus, store)
    assert plain(PROBES) == corpus["probes"], "the probes are the ones the corpus ran"
    answers = [run(ledger, step, lesson_id_for) for step in PROBES]
    assert answers == corpus["probe_answers"]
