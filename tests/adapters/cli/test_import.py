"""`lesson-ledger import` of the old `ai_generated_lessons` table, from a CSV export and
straight from a PostgreSQL table: every case the incident report asked about is reported
(duplicates once the slot is canonicalised, `structured` and on-demand rows, NULL
schools, start-only slots), a dry run writes nothing, and running it again adds nothing.
Students' names in `prompt` and `session_data` never reach the ledger."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.eventstore import event_store
from tests.support.command_line import cli
from tests.support.stores import Store

HEADER = b"id,provider_id,school_id,lesson_date,time_slot\n"
PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
COLUMNS = (
    "id", "provider_id", "school_id", "lesson_date", "time_slot", "content", "prompt",
    "session_data", "created_at", "updated_at",
)  # fmt: skip


def row(legacy_id: int, school: str | None, slot: str, date: str = "2025-09-05") -> dict[str, Any]:
    return {
        "id": legacy_id,
        "provider_id": PROVIDER if legacy_id % 2 else PROVIDER.upper(),
        "school_id": school,
        "lesson_date": date,
        "time_slot": slot,
        "content": json.dumps({"lesson": {"title": f"Lesson {legacy_id}"}}),
        "prompt": f"Write a reading lesson for Jane Doe ({legacy_id})",
        "session_data": json.dumps({"students": [{"name": "Jane Doe", "iep": "decoding"}]}),
        "created_at": f"2025-09-01T10:00:{legacy_id:02d}+00:00",
        "updated_at": None,
    }


# Pages of four rows: some collisions fall in one page, some across pages.
ROWS = [
    row(1, "school-1", "08:30-09:00"),
    row(2, "school-1", "8:30-9:00"),  # the same slot as row 1, spelled otherwise
    row(3, "school-1", "structured"),  # the old fallback: an on-demand lesson
    row(4, None, "09:00-09:30"),  # NULL school
    row(5, "null", "09:30-10:00"),  # the front end's placeholder for no school
    row(6, "school-1", "on-demand-abc"),
    row(7, "school-1", "08:00"),  # a start time only
    row(8, "school-1", "08:30 - 09:00"),  # row 1 again, two pages later
    row(9, "school-1", "10:00-10:30", date="2025-09-31"),
    row(10, "school-2", "10:00-10:30"),
    row(11, "school-1", "structured", date="2025-09-06"),  # (the real table allows one a day)
    row(12, "school-2", "10:00\u201310:30"),  # row 10, with an en dash
]
PAGE = "4"


def write_csv(path: Path, rows: list[dict[str, Any]], rename: dict[str, str] | None = None) -> None:
    names = [(rename or {}).get(column, column) for column in COLUMNS]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(names)
        for values in rows:
            writer.writerow(["" if values[c] is None else values[c] for c in COLUMNS])


def import_json(store: Store, *source: str) -> dict[str, Any]:
    ran = cli(
        "import", *source, "--page-size", PAGE, "--batch-id", "legacy-1", "--json",
        database_url=store.url,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    summary: dict[str, Any] = ran.json()
    return summary


def cases(summary: dict[str, Any], name: str) -> dict[str, str]:
    return {case["legacy_id"]: case["detail"] for case in summary[name]}


def assert_every_case_reported(summary: dict[str, Any], *, imported: int, replayed: int) -> None:
    assert (summary["rows"], summary["imported"], summary["replayed"]) == (12, imported, replayed)
    assert set(cases(summary, "on_demand")) == {"3", "6", "11"}
    assert set(cases(summary, "start_only")) == {"7"}
    assert cases(summary, "collisions") == {
        "2": "collides with legacy row 1",
        "8": "collides with legacy row 1",
        "12": "collides with legacy row 10",
    }
    assert set(cases(summary, "missing_school")) == {"4", "5"}
    assert set(cases(summary, "invalid")) == {"9"}
    assert "lesson_date" in cases(summary, "invalid")["9"]


def assert_no_student_names(store: Store) -> None:
    ledger = store.open()
    log = event_store(ledger).recorder.select_notifications(start=1, limit=10_000)
    assert log, "nothing was imported"
    assert not [n.id for n in log if b"Jane" in n.state or b"decoding" in n.state]


def test_import_from_csv_reports_each_case_and_is_idempotent(store: Store, tmp_path: Path) -> None:
    legacy = tmp_path / "ai_generated_lessons.csv"
    write_csv(legacy, ROWS)
    store.open()  # the ledger's tables, so an empty ledger can be counted
    dry = import_json(store, "--csv", str(legacy), "--dry-run")
    assert dry["dry_run"] is True
    assert_every_case_reported(dry, imported=6, replayed=0)
    assert store.count_events() == 0

    first = import_json(store, "--csv", str(legacy))
    assert_every_case_reported(first, imported=6, replayed=0)
    events = store.count_events()
    second = import_json(store, "--csv", str(legacy))
    assert_every_case_reported(second, imported=0, replayed=6)
    assert store.count_events() == events
    assert_no_student_names(store)

    start_only = first["start_only"][0]["lesson_id"]
    shown = cli("show", start_only, "--json", database_url=store.url).json()
    assert (shown["time_slot"], shown["flags"], shown["legacy_id"]) == (
        "08:00",
        ["start_only_slot"],
        "7",
    )
    # A collision, within a page (row 2) or across pages (row 8), is in the slot's
    # history: who tried, and which row held it.
    eight = next(case for case in first["collisions"] if case["legacy_id"] == "8")
    held = cli("history", eight["lesson_id"], "--json", database_url=store.url).json()
    rejected = [e for e in held["entries"] if e["event"] == "RequestRejected"]
    assert [(e["request_id"], e["changes"]["holder_request_id"]) for e in rejected] == [
        ("import-2", "import-1"),
        ("import-8", "import-1"),
    ]


def test_the_summary_table_names_every_case(store: Store, tmp_path: Path) -> None:
    legacy = tmp_path / "ai_generated_lessons.csv"
    write_csv(legacy, ROWS)
    ran = cli("import", "--csv", str(legacy), "--page-size", PAGE, database_url=store.url)
    assert ran.exit_code == 0
    for seen in (
        "imported",
        "already imported (replayed)",
        "Collisions (3)",
        "collides with legacy row 10",
        "Missing school (2)",
        "NULL 2025-09-05 09:00-09:30",
        "On-demand lessons (3)",
        "Start time only, flagged (1)",
        "Other invalid rows (1)",
    ):
        assert seen in ran.stdout, seen


def test_other_layouts_are_mapped_and_prompts_never_read(store: Store, tmp_path: Path) -> None:
    legacy = tmp_path / "lessons.csv"
    write_csv(legacy, ROWS[:3], rename={"time_slot": "slot", "school_id": "school"})
    unmapped = cli("import", "--csv", str(legacy), database_url=store.url)
    assert unmapped.exit_code == 2 and "--map time_slot=COLUMN" in unmapped.stderr
    never = cli("import", "--csv", str(legacy), "--map", "time_slot=prompt", database_url=store.url)
    assert never.exit_code == 2 and "never imported" in never.stderr
    ran = cli(
        "import", "--csv", str(legacy), "--map", "time_slot=slot", "--map", "school_id=school",
        "--json", database_url=store.url,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert (ran.json()["imported"], len(ran.json()["collisions"])) == (2, 1)
    both = cli("import", "--csv", str(legacy), "--postgres-table", "t", database_url=store.url)
    assert both.exit_code == 2


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty: not even a header line"),
        (b"id,when\n1,2\n", "has no column 'provider_id'"),
        (b"\xff\xfeid\n", "is not UTF-8 CSV"),
        (HEADER + b"1,p,school-\xff,2025-09-05,08:30-09:00\n" * 2000, "is not UTF-8 CSV"),
    ],
    ids=["empty", "other-columns", "not-utf8", "not-utf8-later"],
)
def test_a_file_that_is_not_the_export_is_one_line(
    store: Store, tmp_path: Path, content: bytes, said: str
) -> None:
    legacy = tmp_path / "lessons.csv"
    legacy.write_bytes(content)
    store.open()  # the ledger's tables, to count what the import wrote

    ran = cli("import", "--csv", str(legacy), database_url=store.url)

    assert ran.exit_code == 2 and said in ran.stderr and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert store.count_events() == 0


def test_import_straight_from_a_postgres_table(postgres_store: Store) -> None:
    store = postgres_store
    schema = store.database.schema
    with store.database.connect() as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(
            f"""CREATE TABLE "{schema}".ai_generated_lessons (
                id bigint PRIMARY KEY, provider_id uuid NOT NULL, school_id text,
                lesson_date text NOT NULL, time_slot text NOT NULL, content jsonb,
                prompt text, session_data jsonb, created_at timestamptz DEFAULT now(),
                updated_at timestamptz,
                CONSTRAINT ai_generated_lessons_unique_lesson
                    UNIQUE (provider_id, school_id, lesson_date, time_slot))"""
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO "{schema}".ai_generated_lessons ({", ".join(COLUMNS)}) '
                f"VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                [tuple(values[c] for c in COLUMNS) for values in ROWS],
            )
    table = f"{schema}.ai_generated_lessons"
    source = ["--postgres-table", table, "--source-url", store.url]
    store.open()
    dry = import_json(store, *source, "--dry-run")
    assert_every_case_reported(dry, imported=6, replayed=0)
    assert store.count_events() == 0
    first = import_json(store, *source)
    assert_every_case_reported(first, imported=6, replayed=0)
    events = store.count_events()
    second = import_json(store, "--postgres-table", table)  # the ledger's own database
    assert_every_case_reported(second, imported=0, replayed=6)
    assert store.count_events() == events
    assert_no_student_names(store)

    missing = cli("import", "--postgres-table", f"{schema}.nope", database_url=store.url)
    assert missing.exit_code == 2 and f"no table {schema}.nope" in missing.stderr
    down = cli(
        "import", "--postgres-table", table, "--source-url", "postgresql://postgres@127.0.0.1:1/x",
        database_url=store.url,
    )  # fmt: skip
    assert down.exit_code == 3


def test_a_json_column_holding_no_object_is_named_as_such(postgres_store: Store) -> None:
    store = postgres_store
    table = f'"{store.database.schema}".ai_generated_lessons'
    contents = {1: '{"title": "t"}', 2: '"a JSON string"', 3: "[1, 2]", 4: "3"}
    with store.database.connect() as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{store.database.schema}"')
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, provider_id uuid, school_id text,"
            " lesson_date date, time_slot text, content jsonb)"
        )
        for legacy_id, content in contents.items():
            conn.execute(
                f"INSERT INTO {table} VALUES (%s, %s, 'school-1', '2025-09-05', %s, %s)",
                (legacy_id, PROVIDER, f"0{legacy_id}:00-0{legacy_id}:30", content),
            )
    store.open()

    summary = import_json(store, "--postgres-table", table.replace('"', ""), "--dry-run")

    assert summary["imported"] == 1
    # A JSON string was "is not JSON": it is JSON, but not an object.
    assert cases(summary, "invalid") == {
        str(legacy_id): "content: must be a JSON object" for legacy_id in (2, 3, 4)
    }
