"""The `Idempotency-Key` header, as clients make it: any visible ASCII (`!` to `~`), up to
255 characters, opaque to the ledger. It is never stored or logged as sent: the ids it
stands for (a batch's id, a request's id) are derived from it with the ledger's keyed
hash (adapters/keys/keyed_ids.py). See docs/decisions/0020-idempotency-keys.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from adapters.http.problems import invalid
from adapters.keys.keyed_ids import KeyedIds
from domain.errors import FieldError

HEADER = "Idempotency-Key"
MAX_LENGTH = 255


def _checked(value: str | None) -> str | None:
    """The key, or a validation error naming what is wrong (never quoting the key)."""
    if value is None:
        return None
    if not value:
        raise PydanticCustomError("idempotency_key", "must not be empty")
    if len(value) > MAX_LENGTH:
        raise PydanticCustomError(
            "idempotency_key",
            "must be at most {limit} characters, not {length}",
            {"limit": MAX_LENGTH, "length": len(value)},
        )
    for position, character in enumerate(value, start=1):
        if not "!" <= character <= "~":
            raise PydanticCustomError(
                "idempotency_key",
                "must be visible ASCII characters (! to ~, no spaces): character {position} is not",
                {"position": position},
            )
    return value


IdempotencyKey = Annotated[
    str | None,
    AfterValidator(_checked),
    Header(
        alias=HEADER,
        description="Any visible ASCII (! to ~), up to 255 characters. The same key again "
        "replays the first answer. Opaque to the ledger: it keeps only ids derived from it "
        "with a keyed hash, never the key.",
        json_schema_extra={"maxLength": MAX_LENGTH, "pattern": "^[!-~]+$"},
    ),
]
"""The header, checked: a 422 naming `Idempotency-Key` for anything else."""


def keyed_ids(request: Request) -> KeyedIds:
    ids: KeyedIds = request.app.state.keyed_ids
    return ids


def request_id_for(given: object, key: str | None, ids: KeyedIds) -> object:
    """A single request's id: the body's, or, without one, the id derived from the key.
    Both given, they must agree (the body's id is the key, or the id derived from it)."""
    if key is None:
        return given
    derived = ids.derive(key)
    if given is None:
        return derived
    if isinstance(given, str) and given.strip() in (key, derived):
        return given
    raise invalid(
        [
            FieldError(
                field="request_id",
                message=f"differs from the {HEADER} header: send one of them, or the same in both",
            ),
            FieldError(field=HEADER, message="differs from the body's request id"),
        ]
    )
