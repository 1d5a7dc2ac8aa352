"""Students' details as the ledger holds them: sealed, opaque to the domain.

Each student's part of a request, and a generated lesson's content, are sealed by the
`StudentData` port (domain/ports.py; adapters/keys/ implements it) as soon as a command
has been validated, and opened only where they are read: by the generator, and in the
answers of history and lesson queries. The domain sees a sealed part as a dict it does
not look into, except for one shape: a part written before parts were sealed.
"""

from __future__ import annotations

from typing import Any

PLAIN = "plain"
"""A part written before students' data was sealed: `{"plain": part}` (the adapter that
seals parts reads it as it is, and `students encrypt-existing` seals it in place)."""


def plain_parts(students: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Students' parts as written before they were sealed."""
    return None if students is None else [{PLAIN: part} for part in students]


def plain_content(content: dict[str, Any] | None) -> dict[str, Any] | None:
    """A lesson's content as written before it was sealed."""
    return None if content is None else {PLAIN: content}
