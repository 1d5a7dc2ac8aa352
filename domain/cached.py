"""`cached_attribute`: `functools.cached_property` without its lock.

On Python 3.11 every `cached_property` of a class shares one lock, taken on each first
use of each instance: the ledger's threads queued on it for every request's lesson id
and fingerprint. Python 3.12 dropped the lock (it protected nothing the GIL did not);
this is that version. A value computed twice by two threads at once is the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached_attribute(Generic[T]):  # lower case, as the decorator it replaces
    """Computed on first use, then kept in the instance's `__dict__` (which a frozen
    dataclass allows: only its `__setattr__` refuses)."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_attribute[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> T | cached_attribute[T]:
        if instance is None:
            return self
        # A non-data descriptor: once the value is in the instance's __dict__, Python
        # finds it there and never calls this again.
        value = instance.__dict__[self.name] = self.compute(instance)
        return value
