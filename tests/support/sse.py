"""Reading a Server-Sent Events stream in tests, each wait bounded by a deadline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    name: str
    id: str | None
    data: Any


def events(response: httpx.Response) -> Iterator[Event]:
    """The stream's events as they come (comments, such as pings, skipped)."""
    data: list[str] = []
    name, event_id = "message", None
    for line in response.iter_lines():
        if not line:
            if data:
                yield Event(name, event_id, json.loads("\n".join(data)))
            name, event_id, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


def read_until(
    stream: Iterator[Event], done: Callable[[list[Event]], bool], timeout: float, what: str
) -> list[Event]:
    """Events until `done(events so far)`; fails after `timeout` seconds (the client's
    read timeout bounds each wait for a line)."""
    deadline = time.monotonic() + timeout
    seen: list[Event] = []
    for event in stream:
        seen.append(event)
        if done(seen):
            return seen
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s; got {seen}"
    raise AssertionError(f"{what}: the stream ended; got {seen}")
