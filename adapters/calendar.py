"""The calendar front end's requests, as its code builds them: a batch of groups, each a
slot (`lessonDate`, `timeSlot`, `schoolId`) and what to generate for it (`students`,
`subject`, `subjectType`, ...), and a single lesson as one such group. The HTTP API and
the command line take them as they are.

The group's fields are the ledger's own (domain/commands.py: the request's key fields
and its details, flattened), documented with their types and limits and checked by the
ledger, which names every bad one at once. One is the calendar's: `timeSlot: "on-demand"`,
its custom-prompt call, is the ledger's on-demand lesson (`kind: on_demand`, no slot).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from domain.commands import (
    DETAIL_FIELDS,
    KEY_FIELDS,
    LessonDetails,
    LessonRequestFields,
    TimeSlotText,
)

ON_DEMAND_SLOT = "on-demand"
"""The calendar's time slot for an on-demand lesson (its custom-prompt call)."""


class ApiModel(BaseModel):
    """A request body: snake_case or the front end's camelCase; unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


_UNCHECKED: Any = SkipValidation
"""A group's fields are checked by the ledger (every bad one named at once), not here."""


def _documented(field: FieldInfo) -> tuple[Any, Any]:
    """A details field as a group holds it: typed and limited as the ledger defines it,
    optional, and checked by the ledger rather than here."""
    inner: Any = field.annotation
    if field.metadata:
        inner = Annotated.__class_getitem__((inner, *field.metadata))  # type: ignore[attr-defined]
    return _UNCHECKED[inner | None], Field(None, description=field.description)


_GROUP_FIELDS: dict[str, Any] = {
    **{name: _documented(LessonDetails.model_fields[name]) for name in DETAIL_FIELDS},
    **{
        name: (field.annotation, field)
        for name, field in LessonRequestFields.model_fields.items()
        if name in KEY_FIELDS
    },
    "time_slot": (
        _UNCHECKED[TimeSlotText | Literal["on-demand"] | None],
        Field(
            None,
            description="H:MM-H:MM or HH:MM-HH:MM, 24-hour, start before end, end up to "
            '24:00; or "on-demand" for a lesson without a slot (kind on_demand).',
        ),
    ),
}
CalendarGroup = create_model(
    "CalendarGroup",
    __base__=ApiModel,
    __doc__="One group of the calendar's batch: a slot, and what to generate for it.",
    **_GROUP_FIELDS,
)


class CalendarBatch(ApiModel):
    """The calendar front end's batch, taken as it is sent."""

    batch: list[CalendarGroup] = Field(max_length=100_000)  # type: ignore[valid-type]


CALENDAR_FIELDS = frozenset(DETAIL_FIELDS) | {to_camel(name) for name in DETAIL_FIELDS}
"""A body with any of these at its top level is in the calendar's flat shape."""


def calendar_request(group: BaseModel) -> dict[str, Any]:
    """A group as one ledger request's fields: its generation fields become the details."""
    fields: Mapping[str, Any] = vars(group)  # as sent: the ledger checks them
    details = {name: fields[name] for name in DETAIL_FIELDS if fields[name] is not None}
    key = {name: fields[name] for name in KEY_FIELDS}
    if key["time_slot"] == ON_DEMAND_SLOT and "kind" not in group.model_fields_set:
        key.update(time_slot=None, kind="on_demand")
    return {**key, "details": details or None}


def calendar_item(
    group: BaseModel, index: int, batch_id: str, *, provider_id: str | None
) -> dict[str, Any]:
    """A group as a batch item: item `i`'s request id is `<batch id>-<i>` unless the group
    names one; the batch id ties them."""
    item = calendar_request(group)
    if item["provider_id"] is None:
        item["provider_id"] = provider_id
    item["request_id"] = item["request_id"] or f"{batch_id}-{index}"
    return {**item, "correlation_id": batch_id}
