"""Structured JSON logs, one object a line, each carrying the request id of the HTTP
request it belongs to. Lesson content, student data and tokens are never logged."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# uvicorn's second copy of a message, with terminal colour codes: noise in a JSON line.
_LEFT_OUT = _STANDARD | {"color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, request id and
    any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
            "pid": record.process,
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _LEFT_OUT})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # a key that is not a string, an integer beyond 64 bits
            return json.dumps(entry, default=str)


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each line to `sys.stderr` as it is when the line is written, not as it was
    when logging was set up (the standard library's last-resort handler does the same):
    a stream replaced since, by a test's capture say, is never written to once closed."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure(level: str = "INFO") -> None:
    """Send every log line, the server's own included, through the JSON formatter."""
    handler = CurrentStderr()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = name != "uvicorn.access"  # our own access line replaces it
