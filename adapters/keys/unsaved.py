"""Keys made for events not appended yet: stored by the append itself, in its transaction
(decision record 0064).

A process that holds every stored key (its directory) takes a student it has not met for
one new to the ledger, and makes the key in memory. Storing it on its own cost a
statement and a commit (a disk flush) before the events' own; held here until this
thread's next append, it is stored by that append's statement: one commit, and the key
exists exactly when the first event sealed under it does. It is announced a moment
later (adapters/keys/announcing.py). If another process stored a key for that student
meanwhile, this one is stored beside it, as the student's too (an owner of its own,
`<owner>+<key id>`), so the events sealed under it stay readable and an erasure of the
student destroys both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters.keys.announcing import Announcer
from adapters.keys.data_key import DataKey, UnsavedKey

BESIDE = "+"
"""Between an owner and a key id: the owner of a key stored beside the owner's first."""


@dataclass(frozen=True)
class _Held:
    keys: Sequence[UnsavedKey]
    generation: int


class UnsavedKeys:
    """The keys each thread made for the events it appends next."""

    def __init__(
        self,
        table: str,
        remember: Callable[[Sequence[DataKey], int], None],
        announcer: Announcer,
    ) -> None:
        """`table`: the key table; `remember`: what keeps keys once stored (with the
        forgettings' count at their making: a key an erasure may have met since is not
        kept); `announcer`: what tells other processes of them."""
        self.table = table
        self._remember = remember
        self._announcer = announcer
        self._local = threading.local()

    def hold(self, keys: Sequence[UnsavedKey], generation: int) -> None:
        """This thread's keys to store from now on (those it held before are let go: a
        command that made them saved nothing, and no event is sealed under them)."""
        self._local.held = _Held(keys, generation) if keys else None

    def rows(self) -> list[tuple[str, str, str, str]]:
        """The rows of this thread's keys, for its append to store."""
        held: _Held | None = getattr(self._local, "held", None)
        return [] if held is None else [key.row for key in held.keys]

    def stored(self) -> None:
        """This thread's append stored its keys (committed): remembered, announced, no
        longer held."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            self._remember([key.key for key in held.keys], held.generation)
            self._announcer.announce([key.key.key_id for key in held.keys])

    def close(self) -> None:
        """Announce the keys stored and not announced yet."""
        self._announcer.close()
