"""Batch files for `lesson-ledger batch`: the calendar front end's body as it is sent,
or the ledger's own shape, turned into the items `LessonLedger.request_batch` takes.

- `{"batch": [group, ...]}`: each group is a slot (`lessonDate`, `timeSlot`, `schoolId`,
  optionally `providerId`, `kind`, `requestId`) and what to generate (every other field
  becomes the request's details). The provider comes from `--provider`; item *i*'s
  request id is `<batch id>-<i>`, as the HTTP API derives it from `Idempotency-Key`.
- `{"lessons": [request, ...], "mode": ..., "batch_id": ...}`: requests in snake_case or
  camelCase; a request without `request_id` gets `<batch id>-<i>` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from pydantic import ValidationError

from adapters.calendar import CalendarGroup, calendar_item

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


class BatchFileError(ValueError):
    """The file is not one of the two batch shapes; the message names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class BatchFile:
    """A batch as the ledger takes it: items, mode and batch id."""

    items: list[dict[str, Any]]
    mode: str
    batch_id: str
    generated_batch_id: bool
    """True when neither the file nor `--batch-id` named one (say it, so a re-run can)."""


def read_batch(
    body: object,
    *,
    provider_id: str | None,
    batch_id: str | None,
    mode: str | None,
    actor: str,
) -> BatchFile:
    """The batch in `body` (parsed JSON). `provider_id`, `batch_id` and `mode` are the
    command's options: they fill in what the file leaves out (the options win)."""
    if not isinstance(body, Mapping):
        raise BatchFileError(
            "FILE", 'must be a JSON object: {"batch": [...]} or {"lessons": [...]}'
        )
    if "batch" in body:
        groups = _list(body, "batch")
        unowned = [g for g in groups if isinstance(g, Mapping) and not _provider_of(g)]
        if provider_id is None and unowned:
            # The HTTP API takes the provider from the caller's token; here it is an option.
            raise BatchFileError("--provider", "is needed: the calendar's groups name no provider")
        chosen = batch_id or _generated()
        items = [
            _calendar_item(group, index, chosen, provider_id, actor)
            for index, group in enumerate(groups)
        ]
        return BatchFile(items, mode or "partial", chosen, generated_batch_id=batch_id is None)
    if "lessons" in body:
        requests = _list(body, "lessons")
        named = batch_id or _text_or_none(body.get("batch_id", body.get("batchId")))
        chosen = named or _generated()
        items = [
            _ledger_item(request, index, chosen, provider_id, actor)
            for index, request in enumerate(requests)
        ]
        file_mode = _text_or_none(body.get("mode"))
        return BatchFile(items, mode or file_mode or "partial", chosen, named is None)
    raise BatchFileError("FILE", 'has neither "batch" (calendar) nor "lessons" (ledger) in it')


def _calendar_item(
    group: object, index: int, batch_id: str, provider_id: str | None, actor: str
) -> dict[str, Any]:
    if not isinstance(group, Mapping):
        raise BatchFileError(f"batch[{index}]", "must be a JSON object")
    try:
        parsed = CalendarGroup.model_validate(group)
    except ValidationError as invalid:
        first = invalid.errors(include_input=False)[0]
        where = ".".join(str(part) for part in (f"batch[{index}]", *first["loc"]))
        message = "is not a known field" if first["type"] == "extra_forbidden" else first["msg"]
        raise BatchFileError(where, message) from None
    item = calendar_item(parsed, index, batch_id, provider_id=provider_id)
    return {**item, "actor": actor, "source": "cli"}


def _ledger_item(
    request: object, index: int, batch_id: str, provider_id: str | None, actor: str
) -> dict[str, Any]:
    if not isinstance(request, Mapping):
        raise BatchFileError(f"lessons[{index}]", "must be a JSON object")
    # Only the top level is renamed: details are validated with their camelCase aliases.
    item = {_snake(str(name)): value for name, value in request.items()}
    if provider_id is not None:
        item.setdefault("provider_id", provider_id)
    item["request_id"] = item.get("request_id") or f"{batch_id}-{index}"
    item.setdefault("actor", actor)
    item.setdefault("source", "cli")
    item.setdefault("correlation_id", batch_id)
    return item


def _provider_of(group: Mapping[str, Any]) -> object:
    return group.get("providerId", group.get("provider_id"))


def _list(body: Mapping[str, Any], name: str) -> list[Any]:
    value = body[name]
    if not isinstance(value, list):
        raise BatchFileError(name, "must be a JSON list")
    return value


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _snake(name: str) -> str:
    return _CAMEL_HUMP.sub(r"_\1", name).lower()


def _generated() -> str:
    return f"batch-{uuid4().hex[:12]}"
