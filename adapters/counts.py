"""How the ledger's messages and pages say a count: `1 event`, `2 events`."""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """`1 event`, `2 events` (nouns with a plain plural only)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
