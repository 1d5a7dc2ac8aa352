"""A new student's key stored by the append of the events sealed under it (decision record
0064): one transaction, one commit; a key another process stored for the student a moment
before is met by storing this one beside it, so every part stays readable and an erasure
destroys both."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from adapters.keys.erasure import Erasures
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from domain.keys import LessonKey
from tests.adapters.postgres.test_key_directory import (
    LOOK_UP_BY_ID,
    MAKE,
    Statements,
    holds_every_key,
)
from tests.adapters.postgres.test_key_erasures import listening
from tests.support.projections import wait_until
from tests.support.stores import Store
from tests.support.student_data import PROVIDER, parts, request, student
from tests.support.together import in_threads_together


def key_rows(store: Store, ledger: LessonLedger, student_id: str) -> list[tuple[Any, ...]]:
    """The key table's rows of a student: (owner, transaction id that stored it)."""
    keys = sealer_of(ledger).keys
    owner = sealer_of(ledger).student_owner(student_id)
    return store.query(
        f"SELECT owner, xmin::text FROM {keys.table}"
        " WHERE owner = %s OR owner LIKE %s ORDER BY length(owner)",
        (owner, owner + "+%"),
    )


def opening_tx(store: Store, lesson_id: UUID) -> str:
    """The transaction id (its low 32 bits, as a row's xmin) of a lesson's first event."""
    rows = store.query(
        f"SELECT (tx::text::bigint %% 4294967296)::text FROM {store.database.events_table}"
        " WHERE originator_id = %s AND originator_version = 1",
        (lesson_id,),
    )
    return str(rows[0][0])


def test_a_new_students_key_is_stored_by_the_append_of_their_lesson(
    postgres_store: Store,
) -> None:
    """No statement of the keys' own: the key is stored in the transaction of the lesson's
    events (one commit), and the part reads back here and in another process."""
    ledger = postgres_store.open()
    request(ledger, "08:00-08:30", "ada")  # the month's date keys, made
    statements = Statements(listening(ledger))

    lesson = request(ledger, "08:30-09:00", "ben")

    assert statements.look_ups(MAKE) == 0 and statements.look_ups() == 0
    [(_, stored_in)] = key_rows(postgres_store, ledger, "student-ben")
    assert stored_in == opening_tx(postgres_store, lesson)
    assert parts(ledger, lesson) == ["student-ben"]
    assert parts(postgres_store.open(), lesson) == ["student-ben"]
    assert statements.look_ups(LOOK_UP_BY_ID) == 0  # remembered once stored


def test_a_key_an_append_stored_reaches_another_processs_directory(
    postgres_store: Store,
) -> None:
    """Announced a moment after its append, by a thread of the process that stored it:
    the other process then seals the student's next lesson under that key, with no
    statement of the keys' own. Announced too when the process closes at once."""
    ours, theirs = postgres_store.open(), postgres_store.open()
    for ledger in (ours, theirs):
        listening(ledger)
    request(ours, "08:00-08:30", "ada")  # the month's date keys, made
    keys = sealer_of(theirs).keys
    statements = Statements(keys)

    for name, slot, later in (
        ("ben", "08:30-09:00", "10:30-11:00"),
        ("cy", "09:00-09:30", "11:00-11:30"),
    ):
        request(ours, slot, name)
        owner = sealer_of(ours).student_owner(f"student-{name}")
        [(stored, _)] = key_rows(postgres_store, ours, f"student-{name}")
        assert stored == owner
        if name == "cy":
            ours.close()  # before the announcement's pause is over
        wait_until(lambda: holds_every_key(postgres_store, keys), 10, f"{name}'s key heard of")
        lesson = request(theirs, later, name)

        assert parts(theirs, lesson) == [f"student-{name}"]
        assert statements.look_ups(MAKE) == 0 and statements.look_ups() == 0
        assert len(key_rows(postgres_store, theirs, f"student-{name}")) == 1


def test_a_key_stored_elsewhere_a_moment_before_is_met_by_one_beside_it(
    postgres_store: Store,
) -> None:
    """Another process stored Ada's key after this one's directory last heard: this one
    makes her a key too, which its append stores beside hers. Both lessons read back
    everywhere; erasing Ada destroys both keys, and both lessons read as erased."""
    theirs, ours = postgres_store.open(), postgres_store.open()
    keys = listening(ours)
    owner = sealer_of(ours).student_owner("student-ada")
    first = request(theirs, "08:00-08:30", "ada")
    made = sealer_of(theirs).keys.key_for(owner)
    assert sealer_of(theirs).keys.key_for(owner) is made
    keys.forget([owner], [])  # as if its making were not heard of yet

    second = request(ours, "08:30-09:00", "ada")

    rows = key_rows(postgres_store, ours, "student-ada")
    assert [row[0] for row in rows] == [owner, f"{owner}+{rows[1][0].split('+')[1]}"]
    assert rows[1][1] == opening_tx(postgres_store, second)
    reader = postgres_store.open()
    assert [parts(reader, lesson) for lesson in (first, second)] == [["student-ada"]] * 2

    erasure = Erasures(sealer_of(reader), postgres_store.database).erase_student(
        "student-ada", actor="admin", reason="parent request"
    )

    assert erasure is not None and (erasure.keys, erasure.lessons) == (2, 2)
    assert key_rows(postgres_store, reader, "student-ada") == []
    for ledger in (postgres_store.open(), reader):
        assert [parts(ledger, lesson) for lesson in (first, second)] == [[None]] * 2


def test_a_key_made_for_events_never_appended_seals_nothing_after(
    postgres_store: Store,
) -> None:
    """Cy's key, made while sealing a command whose events never reach an append (the
    database failed it, say), was never stored: Ada's next lesson does not store it
    either, and Cy's next lessons get a key their append stores, and read back in
    another process."""
    ledger = postgres_store.open()
    request(ledger, "08:00-08:30", "ada")
    listening(ledger)
    request(ledger, "08:30-09:00", "ada")  # her key found, and kept, again
    slot = LessonKey(PROVIDER, "school-1", date(2025, 9, 8), "09:00-09:30")
    sealer_of(ledger).seal_students([(slot, [student("cy")])])  # no append follows

    request(ledger, "09:00-09:30", "ada")
    assert key_rows(postgres_store, ledger, "student-cy") == []
    lessons = [request(ledger, time, "cy") for time in ("09:30-10:00", "10:00-10:30")]

    reader = postgres_store.open()
    assert [parts(reader, lesson) for lesson in lessons] == [["student-cy"]] * 2


def test_writers_meeting_the_same_new_students_at_once_keep_every_part_readable(
    postgres_store: Store,
) -> None:
    """Four processes' ledgers request lessons for the same twelve students, new to the
    ledger, all at once, each in slots of its own: every request is accepted, every part
    opens in another ledger, each student has a key per writer at most, and erasing the
    students leaves none of their keys and every part erased."""
    writers, students = 4, 12
    ledgers = [postgres_store.open() for _ in range(writers)]
    for ledger in ledgers:  # each makes keys first (its directory holds every key)
        listening(ledger)
    request(ledgers[0], "07:00-07:30", "ada")  # the month's date keys, made

    def write(number: int) -> list[UUID]:
        made = []
        for n in range(students):
            result = ledgers[number].request_lesson(
                provider_id=PROVIDER,
                school_id="school-1",
                lesson_date="2025-09-08",
                time_slot=f"{8 + number}:{n:02d}-{8 + number}:{n + 30:02d}",
                request_id=f"r-{number}-{n}",
                actor="teacher",
                details={"students": [pupil(n)], "subject": "Reading"},
            )
            assert result.outcome == "accepted"
            made.append(result.lesson_id)
        return made

    lessons = in_threads_together(write, writers, deadline=60)

    for number, made in enumerate(lessons):
        reader = ledgers[(number + 1) % writers]
        assert [parts(reader, lesson) for lesson in made] == [
            [f"pupil-{n}"] for n in range(students)
        ]
    counts = [len(key_rows(postgres_store, ledgers[0], f"pupil-{n}")) for n in range(students)]
    assert all(1 <= count <= writers for count in counts), counts

    erasures = Erasures(sealer_of(ledgers[0]), postgres_store.database)
    for n in range(students):
        erasure = erasures.erase_student(f"pupil-{n}", actor="admin", reason="left")
        assert erasure is not None and erasure.keys == counts[n]
    fresh = postgres_store.open()
    for made in lessons:
        assert [parts(fresh, lesson) for lesson in made] == [[None]] * students


def pupil(n: int) -> dict[str, Any]:
    return {"id": f"pupil-{n}", "grade": 3, "readingLevel": "B", "iepGoals": [f"goal {n}"]}
