"""The event classes' stored schema, held to a snapshot, and their catalogue.

Each stored event class has a `class_version` of its own; the snapshot
(tests/events/schema.json) keeps, for every class and every version it ever had, the
fields it stores and their types. `check` compares the code with the snapshot: a stored
field added, removed or retyped without a new version (and an `upcast_vN_vM` to it) is
an error, and so is a version the snapshot has not recorded yet. `make event-schema`
records the current versions (older ones stay) and writes docs/events.md from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from eventsourcing.utils import get_topic

from domain.event_fields import EVENT_FIELDS
from domain.lesson import LessonSlot

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "tests" / "events" / "schema.json"
CATALOGUE = ROOT / "docs" / "events.md"
NOT_IN_STATE = {"originator_id", "originator_version"}
"""Fields stored as columns of their own, not in the event's state."""
Snapshot = dict[str, dict[str, dict[str, str]]]
"""topic -> version (as text) -> stored field -> type."""


def event_classes(root: type = LessonSlot) -> list[type]:
    """Every concrete event class of the aggregate, in the order they are declared."""
    found = []
    for name, value in vars(root).items():
        # The library's own `Created`: this aggregate never records it (it opens with
        # `Opened`, or `OpenedByRequest`).
        if name in ("Event", "Created") or not isinstance(value, type):
            continue
        if issubclass(value, LessonSlot.Event):
            found.append(value)
    return found


def stored_fields(cls: type) -> dict[str, str]:
    """The fields an event of this class stores in its state, and their types."""
    return {
        field.name: str(field.type)
        for field in dataclasses.fields(cls)
        if field.name not in NOT_IN_STATE
    }


def check(classes: list[type], snapshot: Snapshot) -> list[str]:
    """Every way the code and the snapshot disagree (empty when they agree)."""
    problems = []
    topics = {get_topic(cls) for cls in classes}
    for cls in classes:
        topic, version = get_topic(cls), cls.__dict__.get("class_version")
        if not isinstance(version, int):
            problems.append(f"{topic} has no class_version of its own")
            continue
        known = snapshot.get(topic, {})
        recorded = known.get(str(version))
        if recorded is None:
            problems.append(
                f"{topic} version {version} is not in the schema snapshot: "
                "record it with `make event-schema` (and commit tests/events/schema.json)"
            )
        elif recorded != stored_fields(cls):
            problems.append(
                f"{topic} version {version} stores {_difference(recorded, stored_fields(cls))} "
                f"without a new version: give it class_version = {version + 1}, an "
                f"upcast_v{version}_v{version + 1}, then `make event-schema`"
            )
        newer = [int(v) for v in known if int(v) > version]
        if newer:
            problems.append(f"{topic} went back to version {version} from {max(newer)}")
        for step in range(1, version):
            if not callable(getattr(cls, f"upcast_v{step}_v{step + 1}", None)):
                problems.append(f"{topic} has no upcast_v{step}_v{step + 1}")
    for gone in sorted(set(snapshot) - topics):
        problems.append(
            f"{gone} is in the snapshot but no longer in the code: stored events of it "
            "must still load (keep the class, or register_topic its new place)"
        )
    return problems


def _difference(recorded: dict[str, str], current: dict[str, str]) -> str:
    parts = [f"+{n}" for n in current if n not in recorded]
    parts += [f"-{n}" for n in recorded if n not in current]
    parts += [
        f"{n}: {recorded[n]} -> {current[n]}"
        for n in current
        if n in recorded and recorded[n] != current[n]
    ]
    return ", ".join(parts)


def recorded(classes: list[type], snapshot: Snapshot) -> Snapshot:
    """The snapshot with each class's current version recorded, if it is new: a version
    already recorded is never rewritten (its events are in users' databases)."""
    updated = {topic: dict(versions) for topic, versions in snapshot.items()}
    for cls in classes:
        versions = updated.setdefault(get_topic(cls), {})
        versions.setdefault(str(cls.__dict__["class_version"]), stored_fields(cls))
    return updated


def catalogue(classes: list[type], snapshot: Snapshot) -> str:
    """docs/events.md: each event, what it means, its fields, its versions."""
    lines = [
        "# Events",
        "",
        "Generated from the code by `make event-schema`; a test holds it to the code. Each",
        "event belongs to one lesson slot (`originator_id`, the lesson id) at one version of",
        "it (`originator_version`); both are stored beside the state, not in it. How to",
        "change an event: README, *Changing an event*.",
        "",
    ]
    for cls in classes:
        topic, version = get_topic(cls), cls.__dict__["class_version"]
        lines += [
            f"## {cls.__name__}",
            "",
            _doc(cls),
            "",
            f"Topic `{topic}`, version {version}.",
            "",
        ]
        lines += ["| field | type | meaning |", "| --- | --- | --- |"]
        for name, kind in stored_fields(cls).items():
            cell = kind.replace("|", "\\|")  # a union's bar, not a column's
            lines.append(f"| `{name}` | `{cell}` | {EVENT_FIELDS.get(name, '')} |")
        lines += ["", "Versions:", ""]
        for number in sorted(int(v) for v in snapshot.get(topic, {})):
            upcast = getattr(cls, f"upcast_v{number - 1}_v{number}", None)
            change = _doc(upcast) if upcast is not None else "as first written"
            lines.append(f"- {number}: {change}")
        lines.append("")
    return "\n".join(lines)


def _doc(thing: Any) -> str:
    return " ".join((inspect.getdoc(thing) or "").split())


def load() -> Snapshot:
    snapshot: Snapshot = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the event schema; write the catalogue.")
    parser.add_argument("--check", action="store_true", help="only say how the code differs")
    args = parser.parse_args(argv)
    classes = event_classes()
    snapshot = load()
    if not args.check:
        snapshot = recorded(classes, snapshot)
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
        CATALOGUE.write_text(catalogue(classes, snapshot))
    problems = check(classes, snapshot)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
