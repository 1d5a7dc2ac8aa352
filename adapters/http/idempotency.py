"""The `Idempotency-Key` header, as clients make it: whatever an HTTP header carries
(visible characters, spaces and tabs between), up to 1,024 characters, opaque to the ledger.
It is never stored or logged as sent: the ids it stands for (a batch's id, a request's
id) are derived from it with the ledger's keyed hash (adapters/keys/keyed_ids.py). See
docs/decisions/0020-idempotency-keys.md and 0058-the-calendars-on-demand-call.md."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header, Request
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from adapters.http.problems import invalid
from adapters.keys.keyed_ids import KeyedIds
from domain.errors import FieldError

HEADER = "Idempotency-Key"
MAX_LENGTH = 1024
"""The calendar's longest keys: a slot of a dozen students (about 470 characters), an
on-demand lesson's prompt and its students, a day of thirty slots (about 390)."""
PATTERN = "^[!-~\u0080-\u00ff]([\t !-~\u0080-\u00ff]*[!-~\u0080-\u00ff])?$"
"""What `_checked` takes, for the OpenAPI document (HTTP trims spaces around a value)."""


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
    wrong = _NOT_CARRIED.search(value)
    if wrong is not None:
        raise PydanticCustomError(
            "idempotency_key",
            "must be visible characters, spaces and tabs, as HTTP carries them: "
            "character {position} is a control character",
            {"position": wrong.start() + 1},
        )
    return value


_NOT_CARRIED = re.compile("[^\t !-~\u0080-\u00ff]")
"""A character an HTTP header's value cannot hold (RFC 9110, 5.5: visible ASCII, any byte
from 0x80, as Starlette reads it, a space or a tab): a control character. The server
refuses most before the ledger sees them; a NUL would make a key look like a body to the
keyed hash."""


IdempotencyKey = Annotated[
    str | None,
    AfterValidator(_checked),
    Header(
        alias=HEADER,
        description="Visible characters (ASCII, or any byte from 0x80), spaces and tabs "
        "between, up to 1,024 characters. The same key again replays the first answer. "
        "Opaque to the ledger: it keeps only ids derived from it with a keyed hash, never "
        "the key.",
        json_schema_extra={"maxLength": MAX_LENGTH, "pattern": PATTERN},
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
