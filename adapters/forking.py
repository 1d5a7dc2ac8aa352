"""A process forked after the ledger opened (decision record 0065): what holds sessions,
threads or news heard of belongs to the process that made it."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

_INHERITED: list[object] = []
"""What forked children found open and must neither use nor close (closing a session
there ends it for the parent); kept, so that it is not collected either."""


def in_forked_children(forget_parents: Callable[[], None]) -> None:
    """Call this bound method in every child forked from now on, while its object lives
    (the hook holds it weakly: it keeps nothing alive)."""
    method = weakref.WeakMethod(forget_parents)
    os.register_at_fork(after_in_child=lambda: (bound := method()) and bound())


def left_to_the_parent(inherited: object) -> None:
    """A session or pool a forked child found open: never used, closed or collected here."""
    _INHERITED.append(inherited)
