"""The model's limits: at most R calls and T tokens in any window of W seconds (the
account's requests and tokens per minute), and a pause after a 429's Retry-After.

One rule, two keepers: `MemoryRateLimiter` for one process (SQLite's single worker), and
`PostgresRateLimiter` (adapters/postgres/rate_limits.py) for every worker process sharing
one PostgreSQL. Each call takes a permit before it is sent (its tokens estimated) and
settles the permit with what its answer says it used. A permit is granted when fewer than
R calls were granted in the last W seconds, and their tokens plus this call's estimate
stay within T (a call is never refused tokens in an empty window, or it could never run).

The window looked back over is W plus a margin (2% of W, at least 0.5 s): the model
counts calls when they arrive, a little after their permit, and not all arrive equally
late; the margin keeps those delays from adding up to one call too many in its window.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from adapters.generators.settings import GeneratorSettings


@dataclass
class Permit:
    """A granted call: its id where the keeper needs one, and its tokens as counted."""

    id: int
    tokens: int


class RateLimiter(Protocol):
    """Grants calls within the limits; safe for many tasks of one event loop."""

    async def acquire(self, tokens: int) -> Permit:
        """Wait until a call estimated at `tokens` may be sent, and count it."""
        ...

    async def settle(self, permit: Permit, tokens: int) -> None:
        """The call used `tokens` (from its answer) rather than its estimate."""
        ...

    async def pause(self, seconds: float) -> None:
        """Grant nothing for `seconds` (the model answered 429 with Retry-After)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Calls and tokens per window (None: unlimited) and the window looked back over."""

    requests: int | None
    tokens: int | None
    window_seconds: float

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> Limits | None:
        """The limits the settings set, or None when they set none."""
        if (
            settings.openai_requests_per_minute is None
            and settings.openai_tokens_per_minute is None
        ):
            return None
        return cls(
            settings.openai_requests_per_minute,
            settings.openai_tokens_per_minute,
            settings.openai_rate_window_seconds,
        )

    @property
    def lookback_seconds(self) -> float:
        """The window plus the margin for calls arriving unequally late."""
        return self.window_seconds + max(0.5, self.window_seconds * 0.02)


class MemoryRateLimiter:
    """The limits for one process: the calls granted in the window, in memory."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._calls: deque[tuple[float, Permit]] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._ids = 0

    async def acquire(self, tokens: int) -> Permit:
        while True:
            async with self._lock:
                wait = self._try(tokens)
                if isinstance(wait, Permit):
                    return wait
            await asyncio.sleep(wait)

    def _try(self, tokens: int) -> Permit | float:
        now = time.monotonic()
        if self._paused_until > now:
            return self._paused_until - now
        since = now - self.limits.lookback_seconds
        while self._calls and self._calls[0][0] <= since:
            self._calls.popleft()
        used = sum(permit.tokens for _, permit in self._calls)
        if (self.limits.requests is None or len(self._calls) < self.limits.requests) and (
            self.limits.tokens is None or not self._calls or used + tokens <= self.limits.tokens
        ):
            self._ids += 1
            permit = Permit(self._ids, tokens)
            self._calls.append((now, permit))
            return permit
        return max(0.001, self._calls[0][0] - since)

    async def settle(self, permit: Permit, tokens: int) -> None:
        permit.tokens = tokens  # the deque holds the same object

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def aclose(self) -> None:
        """Nothing to free."""
