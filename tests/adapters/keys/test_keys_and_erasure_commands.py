"""The keys and erasure as operators and admins use them: a wrong key-encryption key
stops the ledger at start with one line; a rotation rewraps every data key and touches no
event; erasure from the command line and over HTTP, with clear answers for a student the
ledger holds nothing of, and no student id in the request log."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.eventstore import event_store, open_ledger
from adapters.keys.keyfile import KEY_FILE_SETTING, ensure_keys, read_keys, replace_keys
from adapters.keys.opening import KEK_SETTING
from adapters.logs import JsonFormatter
from domain import LedgerUnavailable, LessonLedger
from tests.support import ROOT
from tests.support.command_line import ANY_PORT, Ran, cli, cli_process
from tests.support.projections import read_model, table_name, wait_until
from tests.support.served import served
from tests.support.sse import events, read_until
from tests.support.stores import Store
from tests.support.student_data import PROVIDER, all_markers, generate, request

SLOTS = ("08:30-09:00", "09:00-09:30")


def events_digest(store: Store) -> str:
    rows = store.query(f"SELECT state FROM {store.database.events_table} ORDER BY 1")
    return hashlib.sha256(b"".join(bytes(r[0]) for r in rows)).hexdigest()


def test_a_wrong_key_encryption_key_stops_the_ledger_at_start(
    store: Store, ledger: LessonLedger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    request(ledger, "08:30-09:00", "ada")
    other = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    monkeypatch.setenv(KEK_SETTING, other)

    with pytest.raises(LedgerUnavailable, match="does not open this database's data keys"):
        open_ledger(store.url)
    served = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "serve", *ANY_PORT, "--database-url", store.url],
        cwd=ROOT,
        env={**os.environ, KEK_SETTING: other},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 3
    assert len(served.stderr.strip().splitlines()) == 1, served.stderr
    assert "key-encryption key" in served.stderr and "Traceback" not in served.stderr


def test_a_missing_key_file_on_postgresql_is_one_line(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(KEY_FILE_SETTING, str(tmp_path / "nowhere.json"))
    ran = cli("show", "--provider", "x", database_url=postgres_store.url)
    assert ran.exit_code in (2, 3)
    shown = cli("projections", "status", database_url=postgres_store.url)
    assert shown.exit_code == 3 and "key file" in shown.stderr and "Traceback" not in shown.stderr


@pytest.fixture
def key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A key file of the test's own, which the ledgers it opens read (and rotate)."""
    path = tmp_path / "rotated.keys.json"
    ensure_keys(path)
    monkeypatch.setenv(KEY_FILE_SETTING, str(path))
    return path


def test_rotating_the_key_encryption_key_rewraps_every_key_and_touches_no_event(
    store: Store, key_file: Path
) -> None:
    ledger = open_ledger(store.url)
    lesson_id = request(ledger, "08:30-09:00", "ada", "ben")
    generate(ledger, lesson_id, *all_markers("ada"))
    before = ledger.get_lesson(lesson_id)
    ledger.close()
    kek, events = read_keys(key_file)["key_encryption_key"], events_digest(store)

    rotated = cli("keys", "rotate", database_url=store.url)

    assert rotated.exit_code == 0, rotated.stderr
    now = read_keys(key_file)
    assert now["key_encryption_key"] != kek and now["previous_key_encryption_key"] == kek
    assert kek_ids(store) == {hashlib.sha256(now["key_encryption_key"]).hexdigest()[:12]}
    assert events_digest(store) == events
    with open_ledger(store.url) as reopened:
        assert reopened.get_lesson(lesson_id) == before


def kek_ids(store: Store) -> set[str]:
    """The key-encryption keys the stored data keys are wrapped by (their ids)."""
    return {
        str(row[0]) for row in store.query(f"SELECT kek_id FROM {table_name(store, 'data_keys')}")
    }


def test_a_rotation_while_a_ledger_runs_leaves_every_key_open_to_every_process(
    store: Store, key_file: Path
) -> None:
    running = open_ledger(store.url)  # a server process, started before the rotation
    try:
        ada = request(running, "08:30-09:00", "ada")

        assert cli("keys", "rotate", database_url=store.url).exit_code == 0
        # The running ledger takes up the rotation before it wraps a key it makes.
        ben = request(running, "09:00-09:30", "ben", day="2025-10-06")
        with open_ledger(store.url) as started_after:
            assert started_after.get_lesson(ben).students[0]["id"] == "student-ben"  # type: ignore[union-attr,index]
            cy = request(started_after, "10:00-10:30", "cy", day="2025-11-03")
        # A key wrapped by the new key-encryption key: the running ledger reads the file
        # again, and opens it.
        assert running.get_lesson(cy).students[0]["id"] == "student-cy"  # type: ignore[union-attr,index]
        shown = cli("show", str(ben), database_url=store.url)
        assert shown.exit_code == 0 and "Traceback" not in shown.stderr, shown.stderr

        # The next rotation rewraps the keys made under the key before it too.
        assert cli("keys", "rotate", database_url=store.url).exit_code == 0
        current = read_keys(key_file)["key_encryption_key"]
        assert kek_ids(store) == {hashlib.sha256(current).hexdigest()[:12]}
        with open_ledger(store.url) as later:
            for lesson, name in ((ada, "ada"), (ben, "ben"), (cy, "cy")):
                assert later.get_lesson(lesson).students[0]["id"] == f"student-{name}"  # type: ignore[union-attr,index]
    finally:
        running.close()


def test_keys_made_after_two_rotations_by_a_ledger_that_opened_none_open_elsewhere(
    store: Store, key_file: Path
) -> None:
    """The second rotation drops the key before the first from the file: a running
    ledger that had opened no key since must not wrap the keys it makes with it."""
    running = open_ledger(store.url)  # a server process, started before the rotations
    try:
        for _ in range(2):
            assert cli("keys", "rotate", database_url=store.url).exit_code == 0

        ada = request(running, "08:30-09:00", "ada")

        with open_ledger(store.url) as started_after:
            assert started_after.get_lesson(ada).students[0]["id"] == "student-ada"  # type: ignore[union-attr,index]
        current = read_keys(key_file)["key_encryption_key"]
        assert kek_ids(store) == {hashlib.sha256(current).hexdigest()[:12]}
    finally:
        running.close()


def test_a_key_file_broken_while_a_ledger_runs_leaves_it_making_keys(
    store: Store, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Edited by hand, say: the ledger goes on with the keys it has, and says so once."""
    running = open_ledger(store.url)
    try:
        kept = key_file.read_text()
        key_file.write_text("{ not a key file")

        lessons = [
            request(running, slot, name) for slot, name in zip(SLOTS, ("ada", "ben"), strict=True)
        ]

        warnings = [r for r in caplog.records if "key file changed" in r.getMessage()]
        assert len(warnings) == 1 and "not valid JSON" in warnings[0].getMessage()
        key_file.write_text(kept)
        with open_ledger(store.url) as started_after:
            for lesson, name in zip(lessons, ("ada", "ben"), strict=True):
                assert started_after.get_lesson(lesson).students[0]["id"] == f"student-{name}"  # type: ignore[union-attr,index]
    finally:
        running.close()


def test_a_rotation_killed_before_its_rewrap_is_finished_by_the_next_start(
    store: Store, key_file: Path
) -> None:
    with open_ledger(store.url) as before:
        ada = request(before, "08:30-09:00", "ada")
    old, new = read_keys(key_file)["key_encryption_key"], AESGCM.generate_key(bit_length=256)
    # What `keys rotate` writes first; killed then, before a data key was rewrapped.
    replace_keys(key_file, {"key_encryption_key": new, "previous_key_encryption_key": old})

    with open_ledger(store.url) as after:
        assert after.get_lesson(ada).students[0]["id"] == "student-ada"  # type: ignore[union-attr,index]
    assert kek_ids(store) == {hashlib.sha256(new).hexdigest()[:12]}


def test_erasing_from_the_command_line(store: Store, ledger: LessonLedger) -> None:
    request(ledger, "08:30-09:00", "ada")
    erased = cli(
        "students", "erase", "student-ada", "--reason", "request", "--json",
        database_url=store.url,
    )  # fmt: skip
    assert erased.exit_code == 0 and erased.json()["lessons"] == 1
    again = cli("students", "erase", "student-ada", "--reason", "again", database_url=store.url)
    assert again.exit_code == 1 and "no data of this student" in again.stderr
    listed = cli("students", "erasures", "--json", database_url=store.url)
    assert [e["kind"] for e in listed.json()] == ["student"]
    assert "student-ada" not in listed.stdout
    # Which records the latest signed checkpoint covers: one signed now, then one more.
    assert cli("audit", "checkpoint", database_url=store.url).exit_code == 0
    request(ledger, "09:00-09:30", "ben")
    ben = cli("students", "erase", "student-ben", "--reason", "r", database_url=store.url)
    assert ben.exit_code == 0, ben.stderr
    assert ben.stdout.endswith(": 1 key destroyed, 1 lesson reached\n")
    listed = cli("students", "erasures", "--json", database_url=store.url)
    assert [(e["reason"], e["covered"]) for e in listed.json()] == [
        ("request", True),
        ("r", False),
    ]
    table = cli("students", "erasures", database_url=store.url).stdout
    assert "in a checkpoint" in table and "yes" in table and "not yet" in table


def test_an_erasure_names_the_student_as_requests_do(store: Store, ledger: LessonLedger) -> None:
    """Requests trim a student's id; so does erasure: an id given with a space (pasted
    from a spreadsheet) erases the student, where it answered that there was no data. A
    blank id or reason erases nothing and says which."""
    request(ledger, "08:30-09:00", "ada")
    blank = cli("students", "erase", "  ", "--reason", "r", database_url=store.url)
    no_reason = cli("students", "erase", "student-ada", "--reason", " ", database_url=store.url)

    erased = cli(
        "students", "erase", " student-ada\t", "--reason", " request ", "--json",
        database_url=store.url,
    )  # fmt: skip

    assert blank.exit_code == 2 and "invalid: STUDENT_ID: is missing" in blank.stderr
    assert no_reason.exit_code == 2 and "invalid: --reason: is missing" in no_reason.stderr
    assert erased.exit_code == 0, erased.stderr
    assert (erased.json()["lessons"], erased.json()["reason"]) == (1, "request")
    assert cli("students", "erasures", "--json", database_url=store.url).json()[0]["keys"] == 1
    with served(store.url) as api:
        request(api.app.state.ledger, "09:00-09:30", "ben")
        spaced = api.client.post(
            "/v1/students/%20student-ben%20/erasure",
            json={"reason": "request"},
            headers=api.auth("admin"),
        )
        nobody = api.client.post(
            "/v1/students/%20/erasure", json={"reason": "request"}, headers=api.auth("admin")
        )
    assert spaced.status_code == 200 and spaced.json()["lessons"] == 1
    assert nobody.status_code == 422
    assert nobody.json()["errors"][0]["field"] == "student_id"


def test_show_and_history_say_what_an_erasure_took(store: Store, ledger: LessonLedger) -> None:
    lesson = str(request(ledger, "08:30-09:00", "ada", "ben"))
    generate(ledger, UUID(lesson), *all_markers("ada", "ben"))
    assert "erased" not in cli("show", lesson, database_url=store.url).stdout

    assert (
        cli("students", "erase", "student-ada", "--reason", "r", database_url=store.url).exit_code
        == 0
    )

    shown = cli("show", lesson, database_url=store.url)
    assert "2 (1 erased)" in shown.stdout and "content" in shown.stdout
    assert "(erased: a student of this lesson, or its date)" in shown.stdout
    data = cli("show", lesson, "--json", database_url=store.url).json()
    assert (data["students"], data["students_erased"], data["content"]) == (2, 1, None)
    assert data["content_erased"] is True
    history = cli("history", lesson, database_url=store.url).stdout
    assert "2 student(s), 1 erased" in history and "content=(erased" in history
    assert "MARKER" not in shown.stdout + history


def test_the_servers_daily_retention_runs_at_start(
    store: Store, ledger: LessonLedger, caplog: pytest.LogCaptureFixture
) -> None:
    today = datetime.now(UTC).date()
    old = request(ledger, SLOTS[0], "ada", day=(today - timedelta(days=400)).isoformat())
    recent = request(ledger, SLOTS[0], "ben", day=(today - timedelta(days=10)).isoformat())
    caplog.set_level(logging.INFO, logger="lesson_ledger.retention")

    def ran() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "lesson_ledger.retention"]

    with served(store.url, retention_days=30) as api:
        wait_until(ran, what="the server's retention run")
        records = api.client.get("/v1/students/erasures", headers=api.auth("admin")).json()
    # So many days that they reach back past year 1: a run that erases nothing (the
    # retention thread died of an OverflowError at start, unlogged).
    caplog.clear()
    with served(store.url, retention_days=10**9):
        wait_until(ran, what="the server's retention run")
        assert ran() == ["retention applied"]

    assert [(r["kind"], r["actor"], r["reason"]) for r in records["erasures"]] == [
        ("retention", "retention", "daily")
    ]
    fresh = open_ledger(store.url)  # this test's ledger may keep keys 5 s (SQLite)
    try:
        assert fresh.get_lesson(old).students == [None]  # type: ignore[union-attr]
        assert fresh.get_lesson(recent).students != [None]  # type: ignore[union-attr]
    finally:
        fresh.close()


def test_retention_from_the_command_line_counts_the_lessons_each_run_reaches(
    store: Store, ledger: LessonLedger
) -> None:
    today = datetime.now(UTC).date()
    year_ago, half_year_ago = today - timedelta(days=400), today - timedelta(days=200)
    old = [request(ledger, slot, "ada", day=year_ago.isoformat()) for slot in SLOTS]
    recent = request(ledger, SLOTS[0], "ben", day=half_year_ago.isoformat())
    with read_model(store, ledger) as model:
        model.catch_up()

    def apply(days: int, *more: str) -> Ran:
        ran = cli("retention", "apply", "--older-than", str(days), *more, database_url=store.url)
        assert ran.exit_code == 0, ran.stderr
        return ran

    # A blank reason is refused before anything is taken, or shown (a process of its own:
    # its progress bar, in a pipe, would be a line too).
    blank = cli_process(
        "retention", "apply", "--older-than", "300", "--reason", " ", "--database-url", store.url
    )
    assert blank.exit_code == 2
    assert blank.stderr.strip() == (
        "invalid: --reason: is missing: say why (kept with the erasure's record)"
    )
    # Days reaching back past year 1 reach nothing (it was an OverflowError traceback).
    for days in (10**8, 10**30):
        reached = apply(days, "--dry-run").stdout
        assert "0 keys of lesson dates before 0001-01-01 would be destroyed" in reached
    # A dry run names what would go, and takes nothing.
    dry = apply(300, "--dry-run")
    assert "dry run, nothing erased" in dry.stdout and "2 lessons reached" in dry.stdout
    assert all(ledger.get_lesson(lesson).students != [None] for lesson in old)  # type: ignore[union-attr]
    # The year-old day's two lessons; then the half-year-old one alone, not the two again.
    first = apply(300, "--json").json()
    second = apply(100, "--json").json()
    assert (first["lessons"], second["lessons"]) == (2, 1)
    fresh = open_ledger(store.url)  # this test's ledger may keep keys 5 s (SQLite)
    try:
        assert [fresh.get_lesson(lesson).students for lesson in [*old, recent]] == [[None]] * 3  # type: ignore[union-attr]
    finally:
        fresh.close()
    nothing_left = apply(100)
    assert "nothing to erase" in nothing_left.stdout and "dry run" not in nothing_left.stdout
    listed = cli("students", "erasures", "--json", database_url=store.url).json()
    assert [(e["kind"], e["lessons"]) for e in listed] == [("retention", 2), ("retention", 1)]


def test_erasing_over_http_is_for_admins_and_logs_no_student_id(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    with served(store.url) as api, caplog.at_level(logging.INFO):
        ledger = api.app.state.ledger
        request(ledger, "08:30-09:00", "ada")
        path = "/v1/students/student-ada/erasure"
        provider = api.auth("provider", "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d")
        assert api.client.post(path, json={"reason": "r"}, headers=provider).status_code == 403
        erased = api.client.post(path, json={"reason": "request"}, headers=api.auth("admin"))
        assert erased.status_code == 200 and erased.json()["lessons"] == 1
        again = api.client.post(path, json={"reason": "request"}, headers=api.auth("admin"))
        assert again.status_code == 404
        assert again.headers["content-type"].startswith("application/problem+json")
        # A student id with a slash, as requests take it: it was unrouted, a bare 404.
        ledger.request_lesson(
            provider_id=PROVIDER, school_id="school-1", lesson_date="2025-09-08",
            time_slot="09:00-09:30", request_id="r-slash", actor="teacher",
            details={"students": [{"id": "2024/123", "grade": 3}], "subject": "Reading"},
        )  # fmt: skip
        for sent in ("2024%2F123", "2024/123"):
            slashed = api.client.post(
                f"/v1/students/{sent}/erasure", json={"reason": "r"}, headers=api.auth("admin")
            )
            assert slashed.status_code == (200 if sent.endswith("%2F123") else 404)
        assert slashed.json()["detail"].startswith("the ledger holds no data of this student")
        # A path no route takes is not logged as sent (it was): it may hold an id too.
        typo = api.client.post("/v1/student/student-ada/erase", headers=api.auth("admin"))
        assert typo.status_code == 404
    # The server's own lines (uvicorn's access line is off under `lesson-ledger serve`:
    # adapters/logs.py; httpx is this test's client).
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "uvicorn.access"))]
    logged = "\n".join(handler.format(record) for record in ours)
    assert "/v1/students/{student_id}/erasure" in logged and "(no route)" in logged
    # Not "2024" alone: a request id's random hex may hold it.
    assert all(sent not in logged for sent in ("student-ada", "2024/123", "2024%2F123"))


def test_the_api_says_which_lessons_content_an_erasure_took(store: Store) -> None:
    """A provider's application reads `content: null` for a generated lesson: erased,
    not lost."""
    with served(store.url) as api:
        ledger = api.app.state.ledger
        together = request(ledger, "08:30-09:00", "ada", "ben")
        generate(ledger, together, *all_markers("ada", "ben"))
        waiting = request(ledger, "09:00-09:30", "ada")  # never generated
        admin = api.auth("admin")
        erased = api.client.post(
            "/v1/students/student-ada/erasure", json={"reason": "r"}, headers=admin
        )
        assert erased.status_code == 200, erased.text
        position = event_store(ledger).recorder.max_notification_id()

        def read(lesson: UUID) -> dict[str, object]:
            found = api.client.get(
                f"/v1/lessons/{lesson}", params={"min_position": position}, headers=admin
            )
            assert found.status_code == 200, found.text
            return dict(found.json())

        assert read(together)["status"] == "generated"
        assert (read(together)["content"], read(together)["content_erased"]) == (None, True)
        assert (read(waiting)["content"], read(waiting)["content_erased"]) == (None, False)
        history = api.client.get(f"/v1/lessons/{together}/history", headers=admin).json()
        assert (history["state"]["content"], history["state"]["content_erased"]) == (None, True)
        listed = api.client.get("/v1/lessons", headers=admin).json()["items"]
        assert {item["lesson_id"]: item["content_erased"] for item in listed} == {
            str(together): True,
            str(waiting): False,
        }
        with api.client.stream(
            "GET", "/v1/lessons/events", params={"after": 0}, headers=admin, timeout=20
        ) as response:
            seen = read_until(
                events(response),
                lambda seen: any(e.data.get("event") == "LessonGenerated" for e in seen),
                10,
                "the generation in the change stream",
            )
        sent = next(e.data["lesson"] for e in seen if e.data.get("event") == "LessonGenerated")
        assert (sent["content"], sent["content_erased"]) == (None, True)


def test_erasures_are_listed_for_admins_as_recorded_with_nothing_of_the_student(
    store: Store,
) -> None:
    with served(store.url) as api:
        ledger = api.app.state.ledger
        request(ledger, "08:30-09:00", "ada")
        admin = api.auth("admin")
        path = "/v1/students/erasures"
        assert api.client.get(path).status_code == 401
        provider = api.auth("provider", "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d")
        assert api.client.get(path, headers=provider).status_code == 403
        assert api.client.get(path, headers=admin).json() == {"erasures": [], "covered": 0}
        erased = api.client.post(
            "/v1/students/student-ada/erasure", json={"reason": "parent"}, headers=admin
        ).json()
        api.app.state.read_model.wait_for(api.app.state.read_model.head(), timeout=10)
        api.app.state.audit.checkpoint()  # covers the student's erasure, not the run after
        api.app.state.erasures.retention(date(2025, 9, 9), actor="retention", reason="daily")

        listed = api.client.get(path, headers=admin)

    assert listed.status_code == 200 and listed.json()["covered"] == 1
    student, retention = listed.json()["erasures"]
    assert student == erased  # the record the erasure answered with
    assert (student["kind"], student["reason"], student["keys"], student["lessons"]) == (
        "student",
        "parent",
        1,
        1,
    )
    assert student["actor"].startswith("admin-")  # the admin token's name, as in events
    assert (retention["kind"], retention["actor"], retention["lessons"]) == (
        "retention",
        "retention",
        1,
    )
    assert "student-ada" not in listed.text
