"""The eventsourcing library's private parts the recorder relies on, checked without
PostgreSQL: the installed eventsourcing is the pinned 9.5.x and still has what
`adapters/postgres/subscription.py` (and the recorder's `_create_table`) use."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import textwrap
from typing import Any

import pytest
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresSubscription,
)

from adapters.postgres.subscription import LedgerSubscription

# The library's private parts the recorder relies on (checked without PostgreSQL).

# What LedgerSubscription reads and writes of the library's PostgresSubscription.
SUBSCRIPTION_ATTRIBUTES = (
    "_notifications_queue",
    "_has_been_notified",
    "_last_notification_id",
    "_select_limit",
    "_topics",
    "_thread_error",
    "_has_been_stopped",
    "_recorder",
)
CHECK_SUBSCRIPTION = (
    "adapters/postgres/subscription.py must be checked against the new library version"
)


def _self_attributes(function: Any, stored: bool) -> set[str]:
    """The `self.<name>` attributes a function's (or class's) source assigns (`stored`)
    or reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    context = ast.Store if stored else ast.Load
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, context)
    }


def _library_classes(cls: type) -> list[type]:
    return [c for c in cls.__mro__ if c.__module__.startswith("eventsourcing.")]


def test_the_installed_eventsourcing_is_the_pinned_one() -> None:
    version = importlib.metadata.version("eventsourcing")
    assert version.startswith("9.5."), (
        f"eventsourcing {version} is installed, the recorder was written for 9.5.x: "
        f"{CHECK_SUBSCRIPTION} (and adapters/postgres/recorder.py's _create_table), then "
        "move the pin in pyproject.toml and this test"
    )


def test_the_library_subscription_still_has_the_hooks_it_overrides() -> None:
    """`_pull` and `_listen` are still defined by PostgresSubscription or its bases, and
    still called by them (the pull thread and the listen thread)."""
    version = importlib.metadata.version("eventsourcing")
    library = _library_classes(PostgresSubscription)
    for hook in ("_pull", "_listen"):
        definers = [c.__name__ for c in library if hook in vars(c)]
        assert definers, (
            f"eventsourcing {version}: PostgresSubscription and its bases no longer define "
            f"{hook}, which LedgerSubscription overrides: {CHECK_SUBSCRIPTION}"
        )
        callers = [c.__name__ for c in library if hook in _self_attributes(c, stored=False)]
        assert callers, (
            f"eventsourcing {version}: PostgresSubscription and its bases no longer use "
            f"self.{hook}, which LedgerSubscription overrides: {CHECK_SUBSCRIPTION}"
        )


@pytest.mark.parametrize("attribute", SUBSCRIPTION_ATTRIBUTES)
def test_the_library_subscription_still_sets_what_ours_uses(attribute: str) -> None:
    """Each attribute LedgerSubscription reads or writes is still set by the __init__ of
    PostgresSubscription or of one of its bases."""
    version = importlib.metadata.version("eventsourcing")
    inits = [
        vars(c)["__init__"] for c in _library_classes(PostgresSubscription) if "__init__" in vars(c)
    ]
    set_by_library = set().union(*(_self_attributes(init, stored=True) for init in inits))
    assert attribute in set_by_library, (
        f"eventsourcing {version}: the attribute {attribute} is missing from "
        f"PostgresSubscription.__init__ and its bases' (LedgerSubscription reads or writes "
        f"it): {CHECK_SUBSCRIPTION}"
    )


def test_the_list_of_library_attributes_is_what_our_subscription_uses() -> None:
    """SUBSCRIPTION_ATTRIBUTES is every private attribute of the library's that
    LedgerSubscription uses (its own are `_held_back`, `_select_settled` and its two
    overrides): a new one used there must be added to the checks above."""
    used = _self_attributes(LedgerSubscription, stored=False) | _self_attributes(
        LedgerSubscription, stored=True
    )
    own = set(vars(LedgerSubscription)) | _self_attributes(LedgerSubscription.__init__, stored=True)
    library_private = {name for name in used - own if name.startswith("_")}
    listed = set(SUBSCRIPTION_ATTRIBUTES)
    assert library_private == listed, (
        "adapters/postgres/subscription.py uses private attributes of the library's not in "
        f"SUBSCRIPTION_ATTRIBUTES: {sorted(library_private - listed)} (add them), or no "
        f"longer uses listed ones: {sorted(listed - library_private)} (drop them)"
    )


def test_the_library_recorder_still_creates_tables_through_the_hook_ours_overrides() -> None:
    """LedgerApplicationRecorder overrides `_create_table` to upgrade the table in the
    library's create-table transaction: the library must still call it."""
    version = importlib.metadata.version("eventsourcing")
    library = _library_classes(PostgresApplicationRecorder)
    assert any("_create_table" in vars(c) for c in library), (
        f"eventsourcing {version}: PostgresApplicationRecorder and its bases no longer "
        "define _create_table: adapters/postgres/recorder.py must be checked against the "
        "new library version"
    )
    creators = [c for c in library if "create_table" in vars(c)]
    assert creators and "_create_table" in _self_attributes(
        vars(creators[0])["create_table"], stored=False
    ), (
        f"eventsourcing {version}: {creators[0].__name__ if creators else '?'}.create_table "
        "no longer calls self._create_table: adapters/postgres/recorder.py must be checked "
        "against the new library version"
    )
