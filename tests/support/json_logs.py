"""The JSON log lines a running process has written to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def log_entries(log: Path) -> list[dict[str, Any]]:
    """Each complete JSON line of the log (none if it does not exist yet). The process
    may be writing its last line as the file is read: a line without its newline is not
    complete, and is left for the next read."""
    if not log.exists():
        return []
    complete = log.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.startswith("{")]
