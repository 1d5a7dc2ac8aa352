"""The data keys a batch needs: every student of it given exactly one key, and every day
of its month one (made together, the first time a month is met), also when several
writers make the same keys at once (on PostgreSQL, from ledgers of their own, each with
its own cache), in any order, never deadlocking; every sealed part opens afterwards."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from adapters.keys.data_key import DataKey
from adapters.keys.data_keys import DataKeys
from adapters.keys.keyfile import KEY_FILE_SETTING, read_keys
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from tests.support.projections import wait_until
from tests.support.stores import Store
from tests.support.student_data import PROVIDER
from tests.support.together import in_threads_together

DAYS = ("2025-09-08", "2025-09-09", "2025-09-10", "2025-09-11", "2025-09-12")
SEPTEMBER = [f"date:2025-09-{day:02d}" for day in range(1, 31)]
SLOTS = ("08:00-08:30", "08:30-09:00", "09:00-09:30", "09:30-10:00")


def week(students: int, writer: int = 0, each: int = 2) -> list[dict[str, Any]]:
    """A week of lessons, each for `each` of `students` students (ids `pupil-N`), on
    slots of this writer's own school."""
    items = []
    for number, (day, slot) in enumerate((d, s) for d in DAYS for s in SLOTS):
        pair = [(number * each + n) % students for n in range(each)]
        items.append(
            {
                "provider_id": PROVIDER,
                "school_id": f"school-{writer}",
                "lesson_date": day,
                "time_slot": slot,
                "request_id": f"w{writer}-{number}",
                "actor": "teacher",
                "details": {
                    "students": [{"id": f"pupil-{n}", "grade": n % 12} for n in pair],
                    "subject": "Reading",
                },
            }
        )
    return items


def owners(store: Store) -> list[str]:
    table = "data_keys" if store.kind == "sqlite" else f'"{store.database.schema}".data_keys'
    return [str(row[0]) for row in store.query(f"SELECT owner FROM {table}")]


def opened_grades(ledger: LessonLedger, result: Any) -> list[list[int]]:
    found = []
    for item in result.items:
        state = ledger.get_lesson(item.lesson_id)
        assert state is not None and state.students is not None
        found.append([part["grade"] for part in state.students if part is not None])
    return found


def test_a_batch_gives_each_of_its_students_and_days_one_key(
    store: Store, ledger: LessonLedger
) -> None:
    items = week(students=12)
    result = ledger.request_batch(items)

    assert [item.outcome for item in result.items] == ["accepted"] * len(items)
    made = owners(store)
    assert len(made) == len(set(made))
    assert sum(owner.startswith("student:") for owner in made) == 12
    assert sorted(owner for owner in made if owner.startswith("date:")) == SEPTEMBER
    assert opened_grades(ledger, result) == [
        [(2 * n) % 12, (2 * n + 1) % 12] for n in range(len(DAYS) * len(SLOTS))
    ]


def test_a_students_key_is_named_by_the_keyed_hash_of_their_id(
    store: Store, ledger: LessonLedger
) -> None:
    # The name erasure finds a student's key by: it must not change between releases.
    ledger.request_batch(week(students=1, each=1)[:1])
    student_key = read_keys(Path(os.environ[KEY_FILE_SETTING]))["student_key"]
    named = hmac.new(student_key, b"pupil-0", hashlib.sha256).hexdigest()
    assert [owner for owner in owners(store) if owner.startswith("student:")] == [
        f"student:{named}"
    ]


def test_writers_making_the_same_keys_at_once_share_one_key_each(
    postgres_store: Store,
) -> None:
    writers = 6
    ledgers = [postgres_store.open() for _ in range(writers)]
    for ledger in ledgers:  # each makes keys first (its directory holds every key)
        wait_until(partial(_makes_first, ledger), 10, "directory")

    def write(number: int) -> Any:
        items = week(students=160, writer=number, each=8)
        random.Random(number).shuffle(items)  # each writer meets the keys in its own order
        return ledgers[number].request_batch(items)

    results = in_threads_together(write, writers, deadline=60)

    made = owners(postgres_store)
    assert len(made) == len(set(made))
    assert sum(owner.startswith("student:") for owner in made) == 160
    assert sorted(owner for owner in made if owner.startswith("date:")) == SEPTEMBER
    for number, result in enumerate(results):
        assert {item.outcome for item in result.items} == {"accepted"}
        # Opened by another writer's ledger: the one key of each student is in every part.
        reader = ledgers[(number + 1) % writers]
        assert all(len(grades) == 8 for grades in opened_grades(reader, result))


@pytest.mark.parametrize(
    "made_first",
    [(False, False), (True, True), (True, False)],
    ids=["both-look-up-first", "both-make-first", "one-of-each"],
)
def test_two_writers_making_the_same_keys_in_opposite_orders_never_deadlock(
    postgres_store: Store, made_first: tuple[bool, bool]
) -> None:
    """A statement's worth of new owners (190), made by two ledgers at once, one in the
    other's reverse order, a hundred times: each time both get their keys (made in one
    order everywhere, neither waits for the other in a circle), and they are the same.
    A writer whose directory holds every key makes keys before looking them up."""
    keys = [_writer(postgres_store, first) for first in made_first]
    for round_ in range(100):
        owners = [f"student:round-{round_}-{n:03d}" for n in range(190)]
        found = in_threads_together(partial(_made_in_order, keys, owners), 2)
        assert {o: k.key_id for o, k in found[0].items()} == {
            o: k.key_id for o, k in found[1].items()
        }
        assert len(found[0]) == 190


def _writer(store: Store, made_first: bool) -> DataKeys:
    """A ledger's keys, with the directory it holds (made first), or without any."""
    keys = sealer_of(store.open()).keys
    if made_first:
        wait_until(lambda: keys.makes_first, 10, "the keys' directory")
        return keys
    alone = DataKeys(keys.sql, keys.kek)  # no listener: no directory
    assert not alone.makes_first
    return alone


def test_a_data_keys_text_names_it_and_shows_no_key(store: Store) -> None:
    """A key shown anywhere (a log, a failing test's message) shows its id and owner,
    never its bytes."""
    key = sealer_of(store.open()).keys.key_for("student:shown")
    shown = repr(key)
    assert key.key_id in shown and "student:shown" in shown
    assert repr(key.key) not in shown and key.key.hex() not in shown


def _makes_first(ledger: LessonLedger) -> bool:
    return sealer_of(ledger).keys.makes_first


def _made_in_order(keys: list[DataKeys], owners: list[str], n: int) -> dict[str, DataKey]:
    """Writer 0 meets the owners in order, writer 1 in the opposite order."""
    return keys[n].keys_for(owners if n == 0 else owners[::-1])
