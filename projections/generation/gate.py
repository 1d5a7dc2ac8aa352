"""The call gate: at most `slots` attempts call the generator at once, and a freed slot
goes to the attempt of highest priority, then earliest admitted, among those this
process holds, whether it is already waiting at the gate or still being checked.

Attempts are admitted when they start (in the order they were handed out or claimed)
and keep their place while they check the slot's state, so an interactive attempt
admitted after bulk ones takes the next slot even if the bulk ones were quicker to get
to the gate. Everything here runs in the worker's event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

Ticket = tuple[int, int]
"""(priority, admission number): smaller goes first."""


class CallGate:
    """`slots` at once, granted in ticket order among the admitted attempts."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self._free = slots
        self._queue: list[Ticket] = []
        self._waiting: dict[Ticket, asyncio.Future[None]] = {}
        self._holding: set[Ticket] = set()
        self._numbers = itertools.count()

    def admit(self, priority: int) -> Ticket:
        """A place in line for an attempt that may call the generator."""
        ticket = (priority, next(self._numbers))
        heapq.heappush(self._queue, ticket)
        return ticket

    async def enter(self, ticket: Ticket) -> None:
        """Wait for a slot (the ticket's turn, and a free slot)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        self._grant()
        try:
            await future
        except asyncio.CancelledError:
            self.done(ticket)
            raise

    def done(self, ticket: Ticket) -> None:
        """The ticket's call is over, or it will not call: free its slot or its place
        (idempotent)."""
        if ticket in self._holding:
            self._holding.discard(ticket)
            self._free += 1
        elif ticket in self._queue:
            self._queue.remove(ticket)
            heapq.heapify(self._queue)
            future = self._waiting.pop(ticket, None)
            if future is not None and not future.done():
                future.cancel()
        self._grant()

    def _grant(self) -> None:
        while self._free > 0 and self._queue and self._queue[0] in self._waiting:
            ticket = heapq.heappop(self._queue)
            future = self._waiting.pop(ticket)
            if future.done():  # cancelled while waiting
                continue
            self._free -= 1
            self._holding.add(ticket)
            future.set_result(None)
