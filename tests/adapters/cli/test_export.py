"""`lesson-ledger export` and `verify-export`: the audit trail as JSON Lines, streamed in
constant memory, without students' sensitive data, and checked back against the ledger
(a good export passes; a changed, removed or invented line fails with exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from domain import LessonConflict, LessonLedger
from tests.support.command_line import LESSON_LEDGER, cli
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
OTHER_PROVIDER = "0b0e6c8e-2f64-4c1a-9a57-0d8f0e1c2b3a"
IEP_GOAL = "decode CVC words with 80% accuracy"
REQUESTS = ("OpenedByRequest", "LessonRequested")  # a request for a new slot, or a re-request


def a_small_history(ledger: LessonLedger) -> None:
    """Requests (with students), a conflict, a generation, a cancellation, an import."""
    details = {
        "students": [
            {"id": "st-1", "grade": 2, "iepGoals": [IEP_GOAL]},
            {"id": "st-2", "grade": 2},
        ],
        "subject": "Reading",
    }
    first = ledger.request_lesson(
        provider_id=PROVIDER, school_id="school-1", lesson_date="2025-09-05",
        time_slot="8:30-9:00", request_id="r-1", actor="alice", details=details,
    )  # fmt: skip
    with pytest.raises(LessonConflict):
        ledger.request_lesson(
            provider_id=PROVIDER, school_id="school-1", lesson_date="2025-09-05",
            time_slot="08:30 - 09:00", request_id="r-2", actor="bob",
        )  # fmt: skip
    ledger.record_generation(lesson_id=first.lesson_id, attempt=1, content={"x": 1}, model="m")
    other = ledger.request_lesson(
        provider_id=OTHER_PROVIDER, school_id="school-2", lesson_date="2025-09-05",
        time_slot="09:00-09:30", request_id="r-3", actor="carol", details=details,
    )  # fmt: skip
    ledger.cancel(lesson_id=other.lesson_id, request_id="c-1", actor="carol")
    ledger.import_lessons(
        [{"id": "77", "provider_id": PROVIDER, "school_id": "school-2", "lesson_date": "2025-09-06",
          "time_slot": "structured", "content": '{"lesson": {}}'}]
    )  # fmt: skip


def export(store: Store, path: Path, *filters: str) -> list[dict[str, Any]]:
    ran = cli("export", *filters, "--output", str(path), database_url=store.url)
    assert ran.exit_code == 0, ran.stderr
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify(store: Store, path: Path, *filters: str) -> Any:
    return cli("verify-export", str(path), *filters, database_url=store.url)


def test_the_export_holds_every_event_with_its_position_and_no_student_data(
    store: Store, tmp_path: Path
) -> None:
    a_small_history(store.open())
    lines = export(store, tmp_path / "audit.jsonl")
    assert len(lines) == store.count_events()
    assert [line["position"] for line in lines] == sorted(line["position"] for line in lines)
    events = [line["event"] for line in lines]
    assert events.count("RequestRejected") == 1 and "LessonImported" in events
    rejected = next(line for line in lines if line["event"] == "RequestRejected")
    assert (rejected["actor"], rejected["request_id"], rejected["source"]) == ("bob", "r-2", "api")
    assert rejected["as_sent"]["time_slot"] == "08:30 - 09:00"
    assert rejected["data"]["holder_request_id"] == "r-1"
    # Both requests were for new slots: each opened its slot (OpenedByRequest).
    requested = [line for line in lines if line["event"] in REQUESTS]
    assert [line["event"] for line in requested] == ["OpenedByRequest", "OpenedByRequest"]
    assert [line["data"]["students"] for line in requested] == [2, 2]  # counts only
    text = (tmp_path / "audit.jsonl").read_text()
    assert IEP_GOAL not in text and "st-1" not in text and "fingerprint" not in text

    to_stdout = cli("export", database_url=store.url)
    assert [json.loads(line) for line in to_stdout.stdout.splitlines()] == lines

    school_2 = export(store, tmp_path / "school-2.jsonl", "--school", "school-2")
    assert {line["lesson_id"] for line in school_2} == {
        line["lesson_id"] for line in lines if line["event"] in ("Opened", "OpenedByRequest")
        and line["data"]["school_id"] == "school-2"
    }  # fmt: skip
    assert len(school_2) == 2 + 2  # OpenedByRequest, Cancelled; Opened, Imported
    assert [line["event"] for line in school_2] == [
        "OpenedByRequest", "LessonCancelled", "Opened", "LessonImported",
    ]  # fmt: skip
    one_provider = export(store, tmp_path / "p.jsonl", "--provider", OTHER_PROVIDER.upper())
    assert [line["event"] for line in one_provider] == [
        "OpenedByRequest", "LessonCancelled",
    ]  # fmt: skip
    since = lines[-2]["recorded_at"]
    assert export(store, tmp_path / "since.jsonl", "--since", since) == lines[-2:]


def not_utf8(path: Path, lines: list[str]) -> Path:
    """The export with a byte that is not UTF-8 in the third line's actor."""
    raw = [line.encode() for line in lines]
    assert b'"actor":"' in raw[2]
    raw[2] = raw[2].replace(b'"actor":"', b'"actor":"\xff', 1)
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def test_a_count_of_one_is_said_in_the_singular(store: Store, tmp_path: Path) -> None:
    store.open().request_lesson(
        provider_id=PROVIDER, school_id="school-1", lesson_date="2025-09-05",
        time_slot="08:30-09:00", request_id="r-1", actor="alice",
    )  # fmt: skip
    path = tmp_path / "audit.jsonl"
    exported = cli("export", "--output", str(path), database_url=store.url)
    assert "exported 1 event (log head 1)" in exported.stderr, exported.stderr
    assert verify(store, path).stdout.endswith(": 1 line up to position 1: matches the ledger\n")


def test_an_empty_file_is_not_said_to_match(store: Store, tmp_path: Path) -> None:
    """It "matched the ledger", 0 lines up to position 0: true, and read as a pass."""
    a_small_history(store.open())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    nothing = verify(store, empty)
    assert nothing.exit_code == 0
    assert nothing.stdout.endswith(
        "empty.jsonl: holds no event, nothing compared with the ledger\n"
    )


def test_verify_passes_a_good_export_and_fails_a_tampered_one(store: Store, tmp_path: Path) -> None:
    a_small_history(store.open())
    good = tmp_path / "audit.jsonl"
    export(store, good)
    lines = good.read_text().splitlines()
    ran = verify(store, good)
    assert ran.exit_code == 0, ran.stdout
    assert f"{len(lines)} lines" in ran.stdout and "matches the ledger" in ran.stdout

    def tampered(name: str, edit: Any) -> Path:
        path = tmp_path / name
        path.write_text("\n".join(edit(list(lines))) + "\n")
        return path

    def changed_actor(rows: list[str]) -> list[str]:
        record = json.loads(rows[2])
        record["actor"] = "mallory"
        rows[2] = json.dumps(record)
        return rows

    def fewer_students(rows: list[str]) -> list[str]:
        index = next(i for i, row in enumerate(rows) if '"OpenedByRequest"' in row)
        record = json.loads(rows[index])
        record["data"]["students"] = 1
        rows[index] = json.dumps(record)
        return rows

    def invented(rows: list[str]) -> list[str]:
        record = json.loads(rows[-1])
        record["position"] = 10_000
        return [*rows, json.dumps(record)]

    def as_other_json(rows: list[str]) -> list[str]:
        # Python takes true for 1 and 1.0 for 1: these lines read as unchanged.
        first, third = json.loads(rows[0]), json.loads(rows[2])
        assert first["position"] == 1
        first["position"], third["version"] = True, float(third["version"])
        return [json.dumps(first), rows[1], json.dumps(third), *rows[3:]]

    def beyond_64_bits(rows: list[str]) -> list[str]:
        record = json.loads(rows[-1])
        record["position"] = 10**30  # SQLite raised OverflowError: a traceback
        return [*rows, json.dumps(record)]

    third = json.loads(lines[2])["position"]  # notification ids may have gaps
    for path, expected in (
        (tampered("actor.jsonl", changed_actor),
         f"line 3 (position {third}): differs from the ledger in actor"),
        (tampered("students.jsonl", fewer_students), "in data.students"),
        (tampered("removed.jsonl", lambda rows: rows[:3] + rows[4:]), "missing line (position"),
        (tampered("invented.jsonl", invented), "the ledger has no event at this position"),
        (tampered("true.jsonl", as_other_json), "line 1: is not a line of an export"),
        (tampered("float.jsonl", as_other_json),
         f"line 3 (position {third}): differs from the ledger in version"),
        (tampered("beyond.jsonl", beyond_64_bits),
         f"(position {10**30}): the ledger has no event at this position"),
        (tampered("garbage.jsonl", lambda rows: [*rows[:2], "{not json", *rows[2:]]),
         "line 3: is not a line of an export"),
        (tampered("deep.jsonl", lambda rows: [*rows[:2], "[" * 10**5 + "]" * 10**5, *rows[2:]]),
         "line 3: is not a line of an export"),
        (not_utf8(tmp_path / "bytes.jsonl", lines),
         f"line 3 (position {third}): differs from the ledger in actor"),
    ):  # fmt: skip
        ran = verify(store, path)
        assert ran.exit_code == 1, (path.name, ran.stdout)
        assert expected in ran.stdout, (path.name, ran.stdout)
        assert "DIFFERS from the ledger" in ran.stdout

    removed = str(tmp_path / "removed.jsonl")
    as_json = cli("verify-export", removed, "--json", database_url=store.url)
    assert as_json.exit_code == 1
    assert as_json.json()["ok"] is False and len(as_json.json()["differences"]) == 1

    filtered = tmp_path / "school-2.jsonl"
    export(store, filtered, "--school", "school-2")
    assert verify(store, filtered, "--school", "school-2").exit_code == 0
    without_filter = verify(store, filtered)
    assert without_filter.exit_code == 1 and "leaves out" in without_filter.stdout
    assert verify(store, tmp_path / "nope.jsonl").exit_code == 2


# Memory: the export streams, so its peak RSS does not grow with the log.

MEASURED = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
sys.exit(code)
"""


SMALL_LOG, LARGE_LOG = 10_000, 40_000
EVENTS_PER_BATCH = 500  # 500 new lessons, one event each


def peak_rss_of_export(url: str, output: Path) -> int:
    """Run the export in a process of its own and return its peak RSS in KiB (a fresh
    parent, so no earlier child's peak is mixed in)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, str(LESSON_LEDGER), "export", "--database-url", url,
         "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def write_events(ledger: LessonLedger, batches: int, start: int) -> None:
    """500 new lessons per batch (one event each: OpenedByRequest)."""
    for number in range(start, start + batches):
        items = [
            {
                "provider_id": PROVIDER,
                "school_id": f"school-{number}",
                "lesson_date": "2025-09-05",
                "time_slot": f"{7 + i // 60:02d}:{i % 60:02d}-{8 + i // 60:02d}:{i % 60:02d}",
                "request_id": f"bulk-{number}-{i}",
                "actor": "bulk",
            }
            for i in range(500)
        ]
        result = ledger.request_batch(items, batch_id=f"bulk-{number}")
        assert result.summary["accepted"] == 500


def test_export_memory_does_not_grow_with_the_log(store: Store, tmp_path: Path) -> None:
    # 10k and then 40k events (the ledger's own batches, 500 lessons each): enough that
    # holding the log would show (about 2 KiB per decoded event), quick enough to run.
    ledger = store.open()
    write_events(ledger, batches=SMALL_LOG // EVENTS_PER_BATCH, start=0)
    small = peak_rss_of_export(store.url, tmp_path / "small.jsonl")
    write_events(
        ledger,
        batches=(LARGE_LOG - SMALL_LOG) // EVENTS_PER_BATCH,
        start=SMALL_LOG // EVENTS_PER_BATCH,
    )
    large = peak_rss_of_export(store.url, tmp_path / "large.jsonl")
    assert sum(1 for _ in (tmp_path / "large.jsonl").open()) == LARGE_LOG
    size = (tmp_path / "large.jsonl").stat().st_size
    report = (
        f"{store.kind}: export peak RSS {small / 1024:.1f} MiB at {SMALL_LOG} events, "
        f"{large / 1024:.1f} MiB at {LARGE_LOG} events ({size / 2**20:.0f} MiB of JSON lines)"
    )
    print(report)
    # Streaming costs one page whatever the length of the log: allow allocator noise only.
    assert large - small < 8 * 1024, report
    assert verify(store, tmp_path / "large.jsonl").exit_code == 0
