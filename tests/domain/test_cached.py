"""`cached_attribute`: computed once per instance, on first use, even on a frozen
dataclass; what the lesson key and the fingerprint use instead of `cached_property`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from domain.cached import cached_attribute
from domain.keys import parse_key

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


@dataclass(frozen=True)
class Counted:
    number: int
    calls: list[int] = field(default_factory=list, compare=False)

    @cached_attribute
    def doubled(self) -> int:
        """Twice the number."""
        self.calls.append(self.number)
        return 2 * self.number


def test_the_value_is_computed_once_per_instance() -> None:
    one, other = Counted(1), Counted(5)
    assert [one.doubled, one.doubled, other.doubled, other.doubled] == [2, 2, 10, 10]
    assert (one.calls, other.calls) == ([1], [5])


def test_the_class_attribute_is_the_descriptor_with_its_docstring() -> None:
    assert isinstance(Counted.doubled, cached_attribute)
    assert Counted.doubled.__doc__ == "Twice the number."


def test_a_kept_value_changes_neither_equality_nor_hash() -> None:
    used, fresh = Counted(3), Counted(3)
    assert used.doubled == 6
    assert used == fresh and hash(used) == hash(fresh)


def test_threads_each_get_their_keys_own_lesson_id() -> None:
    keys = [parse_key(PROVIDER, f"school-{n}", "2025-09-08", "08:30-09:00") for n in range(400)]
    expected = [replace(key).lesson_id for key in keys]  # copies: computed apart
    seen: dict[int, list[object]] = {}
    start = threading.Barrier(8)

    def read(number: int) -> None:
        start.wait(timeout=10)
        seen[number] = [key.lesson_id for key in keys]

    threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(seen[n] == expected for n in range(8))
    assert len(set(expected)) == 400
