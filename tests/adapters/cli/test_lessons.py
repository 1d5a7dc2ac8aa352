"""`lesson-ledger request | batch | show | history` as a user runs them, on SQLite and
PostgreSQL: a known sequence of commands, its history by id and by key, time travel by
version and by time, and the documented exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup

from adapters.cli import app
from domain import lesson_id_for
from tests.support.command_line import cli, cli_process
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
KEY = ["--provider", PROVIDER, "--school", "school-1", "--date", "2025-09-05"]
DETAILS = {
    "students": [{"id": "st-1", "grade": 3, "iepGoals": ["decode CVC words"]}],
    "subject": "Reading",
    "subjectType": "ela",
}


def request(store: Store, request_id: str, actor: str, slot: str, *extra: str) -> dict[str, Any]:
    ran = cli(
        "request", *KEY, "--slot", slot, "--request-id", request_id, "--actor", actor,
        "--json", *extra, database_url=store.url,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    answer: dict[str, Any] = ran.json()
    return answer


def test_history_by_id_and_by_key_shows_every_event_and_rejected_attempt(
    store: Store, tmp_path: Path
) -> None:
    details = tmp_path / "details.json"
    details.write_text(json.dumps(DETAILS))
    first = request(store, "req-1", "alice", "8:30-9:00", "--details-json", str(details))
    assert first["outcome"] == "accepted" and first["attempt"] == 1
    conflict = cli(
        "request", *KEY, "--slot", "08:30 - 09:00", "--request-id", "req-2", "--actor", "bob",
        "--correlation-id", "week-36", database_url=store.url,
    )  # fmt: skip
    assert conflict.exit_code == 1
    assert "'req-1'" in conflict.stderr and "'alice'" in conflict.stderr  # names the holder
    ledger = store.open()
    lesson_id = lesson_id_for(PROVIDER, "school-1", "2025-09-05", "08:30-09:00")
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content={"lesson": {}}, model="m")
    ledger.cancel(lesson_id=lesson_id, request_id="cancel-1", actor="carol", reason="ill")
    again = request(store, "req-3", "dave", "08:30-09:00")
    assert again["outcome"] == "accepted" and again["attempt"] == 2

    by_id = cli("history", str(lesson_id), "--json", database_url=store.url)
    by_key = cli("history", *KEY, "--slot", "8:30-9:00", "--json", database_url=store.url)
    assert by_id.exit_code == by_key.exit_code == 0
    assert by_id.json() == by_key.json()
    entries = by_id.json()["entries"]
    assert [(e["version"], e["event"], e["actor"], e["request_id"]) for e in entries] == [
        (1, "OpenedByRequest", "alice", "req-1"),
        (2, "RequestRejected", "bob", "req-2"),
        (3, "LessonGenerated", "worker", "req-1"),
        (4, "LessonCancelled", "carol", "cancel-1"),
        (5, "LessonRequested", "dave", "req-3"),
    ]
    rejected = entries[1]
    assert rejected["correlation_id"] == "week-36" and rejected["source"] == "cli"
    assert rejected["changes"]["holder_request_id"] == "req-1"
    assert rejected["as_sent"]["time_slot"] == "08:30 - 09:00"
    assert entries[0]["changes"]["students"] == "1 student(s)"
    assert entries[0]["changes"]["time_slot"] == "08:30-09:00"  # the key, canonical
    assert "decode CVC words" not in by_id.stdout  # IEP goals never shown
    state = by_id.json()["state"]
    assert (state["status"], state["attempt"], state["request_id"]) == ("requested", 2, "req-3")

    table = cli("history", str(lesson_id), database_url=store.url)
    assert table.exit_code == 0
    for seen in ("RequestRejected", "bob", "req-2", "week-36", "held by req-1 (alice)"):
        assert seen in table.stdout
    assert "sent as time_slot='08:30 - 09:00'" in table.stdout
    # In a terminal 80 wide, values fold onto the next line rather than end in "…" (the
    # provider id, the date and the slot were cut short).
    narrow = cli("history", str(lesson_id), database_url=store.url, columns=80)
    assert narrow.exit_code == 0 and "…" not in narrow.stdout
    squeezed = re.sub(r"\s", "", column_text(narrow.stdout, -2))
    for whole in (f"provider_id={PROVIDER}", "lesson_date=2025-09-05", "time_slot=08:30-09:00"):
        assert whole in squeezed, narrow.stdout


def test_time_travel_by_version_and_by_time(store: Store) -> None:
    request(store, "req-1", "alice", "08:30-09:00")
    lesson_id = lesson_id_for(PROVIDER, "school-1", "2025-09-05", "08:30-09:00")
    ledger = store.open()
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content={"lesson": {}}, model="m")
    ledger.regenerate(lesson_id=lesson_id, request_id="again-1", actor="alice")
    full = cli("history", str(lesson_id), "--json", database_url=store.url).json()
    assert [e["event"] for e in full["entries"]][-2:] == ["LessonGenerated", "LessonRequested"]

    assert [e["version"] for e in full["entries"]] == [1, 2, 3]
    at_one = cli(
        "history", str(lesson_id), "--as-of-version", "1", "--json", database_url=store.url
    )
    assert [e["version"] for e in at_one.json()["entries"]] == [1]
    assert at_one.json()["state"]["status"] == "requested"
    assert at_one.json()["state"]["content"] is None

    generated_at = full["entries"][1]["recorded_at"]
    then = cli(
        "history", *KEY, "--slot", "8:30-9:00", "--as-of", generated_at, "--json",
        database_url=store.url,
    )  # fmt: skip
    assert then.exit_code == 0
    assert [e["version"] for e in then.json()["entries"]] == [1, 2]
    assert (then.json()["state"]["status"], then.json()["state"]["attempt"]) == ("generated", 1)

    before = cli(
        "history", str(lesson_id), "--as-of", "2000-01-01T00:00:00Z", database_url=store.url
    )
    assert before.exit_code == 0 and "did not exist yet" in before.stdout
    table = cli("history", str(lesson_id), "--as-of-version", "2", database_url=store.url)
    assert "up to version 2" in table.stdout and "State at version 2: generated" in table.stdout


def test_show_by_id_and_by_key(store: Store, tmp_path: Path) -> None:
    details = tmp_path / "details.json"
    details.write_text(json.dumps(DETAILS))
    made = request(store, "req-1", "alice", "8:30-9:00", "--details-json", str(details))
    by_id = cli("show", made["lesson_id"], "--json", database_url=store.url)
    en_dash = "08:30\u201309:00"
    by_key = cli("show", *KEY, "--slot", en_dash, "--json", database_url=store.url)
    assert by_id.json() == by_key.json()
    assert by_id.json()["students"] == 1  # a count: the sensitive part stays in the ledger
    assert by_id.json()["details"]["subject"] == "Reading"
    table = cli("show", made["lesson_id"], database_url=store.url)
    assert "requested" in table.stdout and "alice" in table.stdout


def test_request_details_from_stdin_and_replay(store: Store) -> None:
    args = ["request", *KEY, "--slot", "10:00-10:30", "--request-id", "r", "--actor", "a"]
    first = cli(*args, "--details-json", "-", stdin=json.dumps(DETAILS), database_url=store.url)
    assert first.exit_code == 0 and "accepted" in first.stdout
    again = cli(*args, "--details-json", "-", stdin=json.dumps(DETAILS), database_url=store.url)
    assert again.exit_code == 0 and "replayed" in again.stdout


def test_batch_in_the_calendar_shape_then_replayed(store: Store, tmp_path: Path) -> None:
    body = {
        "batch": [
            {"lessonDate": "2025-09-05", "timeSlot": slot, "schoolId": "school-1", **DETAILS}
            for slot in ("08:30-09:00", "9:00-9:30", "08:30 - 09:00", "structured")
        ]
    }
    file = tmp_path / "week.json"
    file.write_text(json.dumps(body))
    args = ["batch", str(file), "--provider", PROVIDER, "--batch-id", "week-36", "--actor", "cal"]
    ran = cli(*args, "--json", database_url=store.url)
    assert ran.exit_code == 0
    result = ran.json()
    assert [i["outcome"] for i in result["items"]] == [
        "accepted", "accepted", "duplicate_in_batch", "invalid",
    ]  # fmt: skip
    assert result["items"][3]["error"]["errors"][0]["field"] == "time_slot"
    assert result["summary"]["accepted"] == 2
    history = cli("history", result["items"][1]["lesson_id"], "--json", database_url=store.url)
    requested = history.json()["entries"][0]
    assert (requested["event"], requested["version"]) == ("OpenedByRequest", 1)
    assert (requested["request_id"], requested["correlation_id"]) == ("week-36-1", "week-36")

    events = store.count_events()  # the duplicate is one of them, as a refusal
    again = cli(*args, database_url=store.url)
    assert again.exit_code == 0
    assert "2 replayed" in again.stdout and "1 duplicate_in_batch" in again.stdout
    assert store.count_events() == events  # sent again, it writes nothing


def test_atomic_batch_rejected_writes_nothing_and_exits_1(store: Store, tmp_path: Path) -> None:
    request(store, "holder", "alice", "08:30-09:00")
    events = store.count_events()
    body = {
        "lessons": [
            {"providerId": PROVIDER, "schoolId": "school-1", "lessonDate": "2025-09-05",
             "timeSlot": slot, "requestId": f"r-{slot}"}
            for slot in ("07:00-07:30", "8:30-9:00")
        ],
        "mode": "atomic",
        "batch_id": "b-1",
    }  # fmt: skip
    file = tmp_path / "lessons.json"
    file.write_text(json.dumps(body))
    ran = cli("batch", str(file), "--actor", "bob", database_url=store.url)
    assert ran.exit_code == 1
    assert "aborted" in ran.stdout and "held by request holder" in ran.stdout
    assert "nothing written" in ran.stdout
    assert store.count_events() == events


# Exit codes.


def test_bad_input_exits_2_naming_each_field(store: Store, tmp_path: Path) -> None:
    ran = cli(
        "request", "--provider", "not-a-uuid", "--school", "null", "--date", "2025-02-30",
        "--slot", "structured", "--request-id", "r", "--actor", "a", database_url=store.url,
    )  # fmt: skip
    assert ran.exit_code == 2
    assert len(ran.stderr.strip().splitlines()) == 1
    # Each named as the option it came from, not as the API's field.
    for option in ("--provider", "--school", "--date", "--slot"):
        assert f"{option}: " in ran.stderr
    assert "provider_id" not in ran.stderr and "time_slot" not in ran.stderr
    assert cli("show", "nope", database_url=store.url).exit_code == 2
    partial_key = cli("show", "--provider", PROVIDER, database_url=store.url)
    assert partial_key.exit_code == 2 and "--school" in partial_key.stderr
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    ran = cli("batch", str(bad_json), database_url=store.url)
    assert ran.exit_code == 2 and "FILE" in ran.stderr
    calendar = tmp_path / "calendar.json"
    calendar.write_text(json.dumps({"batch": [{"lessonDate": "2025-09-05"}]}))
    unowned = cli("batch", str(calendar), database_url=store.url)
    assert unowned.exit_code == 2 and "--provider" in unowned.stderr
    bad_time = cli(
        "history", "--as-of", "yesterday", *KEY, "--slot", "8:30-9:00", database_url=store.url
    )
    assert bad_time.exit_code == 2 and "--as-of" in bad_time.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "FILE: is not JSON"),
        (b"[]", "FILE: must be a JSON object"),
        (b"{}", 'FILE: has neither "batch"'),
        (b'{"batch": ["\xff"]}', "FILE: is not UTF-8 text: invalid start byte at byte 12"),
        (b"[" * 100_000 + b"]" * 100_000, "FILE: is nested too deeply to read"),
    ],
    ids=["empty", "a-list", "neither-shape", "not-utf8", "too-deep"],
)
def test_a_batch_file_that_cannot_be_read_is_one_true_line(
    store: Store, tmp_path: Path, content: bytes, said: str
) -> None:
    file = tmp_path / "week.json"
    file.write_bytes(content)

    ran = cli("batch", str(file), "--provider", PROVIDER, database_url=store.url)

    assert ran.exit_code == 2
    assert ran.stderr.strip().splitlines() == [ran.stderr.strip()]
    assert said in ran.stderr


def test_details_too_deep_for_a_request_are_one_line(store: Store, tmp_path: Path) -> None:
    details = tmp_path / "details.json"
    details.write_bytes(b'{"students": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")

    ran = cli(
        "request", *KEY, "--slot", "8:30-9:00", "--request-id", "r", "--actor", "a",
        "--details-json", str(details), database_url=store.url,
    )  # fmt: skip

    assert ran.exit_code == 2
    assert ran.stderr.strip() == "invalid: --details-json: is nested too deeply to read"


def test_a_refused_request_speaks_in_the_command_lines_options(
    store: Store, tmp_path: Path
) -> None:
    """What to change is said as the option to change: a missing slot points to `--kind
    on_demand`, a bad field of the details file is named after `--details-json`."""
    no_slot = cli("request", *KEY, "--request-id", "r", "--actor", "a", database_url=store.url)
    details = tmp_path / "details.json"
    details.write_text(json.dumps({"students": [{"id": "st-1", "grade": 3}], "subjekt": "x"}))
    misspelt = cli(
        "request", *KEY, "--slot", "8:30-9:00", "--request-id", "r", "--actor", "a",
        "--details-json", str(details), database_url=store.url,
    )  # fmt: skip

    assert no_slot.exit_code == 2
    assert no_slot.stderr.startswith("invalid: --slot: time slot missing")
    assert "give --kind on_demand" in no_slot.stderr and "kind:" not in no_slot.stderr
    assert misspelt.exit_code == 2
    assert "--details-json: subjekt: is not a known field" in misspelt.stderr
    assert cli("history", *KEY, "--slot", "8:30-9:00", database_url=store.url).exit_code == 1


def test_unknown_lesson_exits_1(store: Store) -> None:
    missing = lesson_id_for(PROVIDER, "school-9", "2025-09-05", "08:30-09:00")
    for command in ("show", "history"):
        ran = cli(command, str(missing), database_url=store.url)
        assert ran.exit_code == 1 and "no lesson has the id" in ran.stderr
        # Asked for by its key, said by its key.
        by_key = (*KEY[:-4], "--school", "school-9", "--date", "2025-09-05")
        ran = cli(command, *by_key, "--slot", "08:30-09:00", database_url=store.url)
        assert ran.exit_code == 1, ran.stderr
        assert "no lesson for provider" in ran.stderr and "'school-9'" in ran.stderr
        assert str(missing) in ran.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["show", "bc6d9951-98a0-5f69-bb51-784a7571209c"],
        ["request", *KEY, "--slot", "8:30-9:00", "--request-id", "r", "--actor", "a"],
        ["export"],
        ["report", "conflicts"],
    ],
    ids=["show", "request", "export", "report"],
)
def test_unreachable_database_exits_3_with_one_line(args: list[str]) -> None:
    # Port 1 on this machine refuses at once: an outage, not a wrong URL.
    ran = cli_process(*args, "--database-url", "postgresql://postgres@127.0.0.1:1/test")
    assert ran.exit_code == 3, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert "Traceback" not in ran.stderr and "127.0.0.1:1" in ran.stderr
    assert ran.stdout == ""


def column_text(table: str, column: int) -> str:
    """A printed table's column (by its place among the `│`-separated cells), its rows'
    fragments joined: a value folded over several lines, whole again."""
    return "".join(line.split("│")[column].strip() for line in table.splitlines() if "│" in line)


def test_a_key_with_parts_missing_names_each(store: Store) -> None:
    one = cli("history", *KEY, database_url=store.url)
    three = cli("show", "--provider", PROVIDER, database_url=store.url)

    assert one.exit_code == three.exit_code == 2
    assert one.stderr.strip() == "invalid: --slot: is missing: the key needs all four parts"
    assert three.stderr.strip() == (
        "invalid: --school, --date, --slot: are missing: the key needs all four parts"
    )


def test_a_malformed_database_url_is_usage() -> None:
    ran = cli("show", "bc6d9951-98a0-5f69-bb51-784a7571209c", database_url="mysql://x/y")
    assert ran.exit_code == 2 and "unknown scheme" in ran.stderr


def commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the command line, as the words that run it."""
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found += commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_option_says_what_its_default_is_and_whether_it_takes_a_value() -> None:
    """A default made when the command runs (`--actor`: the login name) is said in words,
    not as typer's "(dynamic)"; a switch shows no `<bool>`, as if it took a value (typer's
    own `--help` aside)."""
    every = commands(typer.main.get_group(app))
    assert ("students", "erase") in every and ("request",) in every
    switches = 0
    for command in every:
        ran = cli(*command, "--help")
        assert ran.exit_code == 0, command
        assert "(dynamic)" not in ran.stdout, command
        rows = [row for row in ran.stdout.splitlines() if "--" in row and "--help" not in row]
        assert not [row for row in rows if "<bool>" in row], command
        switches += sum(1 for row in rows if re.search(r"--(json|dry-run|restart)\s", row))
    assert switches > 10  # the switches were among the rows read


def test_every_command_explains_itself_with_an_example() -> None:
    for command in (
        ["request"], ["batch"], ["show"], ["history"], ["report", "conflicts"],
        ["import"], ["export"], ["verify-export"],
    ):  # fmt: skip
        ran = cli(*command, "--help")
        assert ran.exit_code == 0
        assert "Example: lesson-ledger" in ran.stdout, command
        assert "--database-url" in ran.stdout, command


def test_no_table_cuts_a_value_short_in_an_80_column_terminal(store: Store, tmp_path: Path) -> None:
    """A terminal's default width: every table folds a long value onto further lines
    rather than end it in '…' (token times, erasure ids, who erased, the contested slot's
    provider, date and slot were cut short)."""
    details = tmp_path / "details.json"
    details.write_text(json.dumps(DETAILS))
    first = request(store, "req-1", "alice", "08:30-09:00", "--details-json", str(details))
    turned_away = cli(
        "request", *KEY, "--slot", "8:30-9:00", "--request-id", "req-2", "--actor", "bob",
        "--correlation-id", "week-36", database_url=store.url,
    )  # fmt: skip
    assert turned_away.exit_code == 1
    batch = tmp_path / "week.json"
    items = [{"lessonDate": "2025-09-08", "timeSlot": "10:00-10:30", "schoolId": "school-1"}]
    batch.write_text(json.dumps({"batch": [{**item, **DETAILS} for item in items]}))
    made = cli("tokens", "create", "--role", "provider", "--provider-id", PROVIDER,
               "--name", "calendar-integration", database_url=store.url)  # fmt: skip
    assert made.exit_code == 0, made.stderr
    erased = cli("students", "erase", "st-1", "--reason", "a parent's request of 2025-09-10",
                 "--actor", "district-privacy-officer", database_url=store.url)  # fmt: skip
    assert erased.exit_code == 0, erased.stderr

    tables = [
        ("show", first["lesson_id"]),
        ("history", first["lesson_id"]),
        ("batch", str(batch), "--provider", PROVIDER, "--batch-id", "week-37"),
        ("tokens", "list"),
        ("students", "erasures"),
        ("report", "conflicts"),
        ("projections", "status"),
    ]
    for command in tables:
        ran = cli(*command, database_url=store.url, columns=80)
        assert ran.exit_code == 0, (command, ran.stderr)
        assert "…" not in ran.stdout, (command, ran.stdout)
        assert max(len(line) for line in ran.stdout.splitlines()) <= 80, command
    erasures = cli("students", "erasures", database_url=store.url, columns=80).stdout
    who = column_text(erasures, 4)
    assert who == "district-privacy-officer", erasures  # whole, over several lines
