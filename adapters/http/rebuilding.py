"""A rebuild of the lessons table started over HTTP (`POST /v1/projections/lessons/rebuild`
or the Operations page), in a thread of the server process that was asked.

Refused at once when the server's database role may not rebuild (the serving role of
"Least privilege": rebuilds run as the schema's owner); a failure on the way is one line in
the log, and the status shows the rebuild as interrupted (resumable), as after a kill.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from adapters.postgres.rights import rebuild_refusal
from adapters.storage.database import Database
from domain.errors import one_line
from projections.read_model import LessonsReadModel
from projections.runner import RunnerBusy

log = logging.getLogger("lesson_ledger.projections")


class RebuildRefused(Exception):
    """This server may not rebuild the lessons table; the message says why."""


def start_rebuild(state: Any, database: Database, read_model: LessonsReadModel) -> bool:
    """Begin a rebuild in the background (False: one is running, here or elsewhere).
    RebuildRefused when the database role may not."""
    refusal = rebuild_refusal(database)
    if refusal is not None:
        raise RebuildRefused(refusal)
    current: threading.Thread | None = getattr(state, "rebuild_thread", None)
    if (current is not None and current.is_alive()) or read_model.rebuilding():
        return False  # this process's, or another's
    thread = threading.Thread(
        target=_rebuild, args=(read_model,), name="rebuild-lessons", daemon=True
    )
    state.rebuild_thread = thread
    thread.start()
    return True


def _rebuild(read_model: LessonsReadModel) -> None:
    try:
        read_model.rebuild()
    except RunnerBusy as busy:  # another process's rebuild, whose progress the status shows
        log.info("rebuild of the lessons table not started: %s", busy)
    except Exception as error:  # the server goes on; the status shows where it stopped
        log.error("rebuild of the lessons table failed: %s", one_line(error))
