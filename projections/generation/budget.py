"""What generating costs: tokens counted per provider and UTC day, a daily cap per
provider, and the totals per model (for /metrics).

Before an attempt calls the model, its expected tokens are reserved against its
provider's day (`reserve`); when the provider has already reached the cap, nothing is
reserved and the attempt fails with `cap_reason` instead of spending. When the attempt
is over, the reservation is replaced by what it used (`settle`). Reserving is atomic in
the database, so attempts racing in many processes cannot all slip under the cap: the
cap is overshot by at most the attempts that were reserved just under it.

The store is a port (adapters/storage/usage.py implements it on SQLite and PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from projections.generation.port import TokenUsage


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one attempt of a provider on a UTC day."""

    provider_id: str
    day: date
    tokens: int


class UsageStore(Protocol):
    """Token counts per provider and day, and totals per model."""

    def reserve(self, provider_id: str, day: date, tokens: int, cap: int | None) -> bool:
        """Hold `tokens` for the provider's day unless its tokens (used and held) have
        reached `cap` (None: no cap); False when they have."""
        ...

    def settle(self, reservation: Reservation, usage: TokenUsage, model: str) -> None:
        """Replace the reservation by the tokens used, and add them to the model's totals."""
        ...


def cap_reason(cap: int, provider_id: str, day: date) -> str:
    """The failure recorded for an attempt refused by the cap."""
    return f"daily token cap of {cap} reached for provider {provider_id} on {day.isoformat()} (UTC)"


class Budget:
    """The daily cap per provider (None: no cap) over a usage store."""

    def __init__(self, store: UsageStore, daily_cap: int | None = None) -> None:
        self.store = store
        self.daily_cap = daily_cap

    def reserve(self, provider_id: str, tokens: int) -> Reservation | None:
        """A reservation, or None when the provider has reached today's cap."""
        day = datetime.now(UTC).date()
        if self.daily_cap is None:
            return Reservation(provider_id, day, 0)  # nothing to hold: only counted after
        if not self.store.reserve(provider_id, day, tokens, self.daily_cap):
            return None
        return Reservation(provider_id, day, tokens)

    def settle(self, reservation: Reservation, usage: TokenUsage | None, model: str) -> None:
        self.store.settle(reservation, usage or TokenUsage(), model)
