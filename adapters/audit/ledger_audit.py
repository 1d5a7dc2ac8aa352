"""The tamper-evident log on the ledger's database: its tree (kept by a follower), its
signed checkpoints and re-anchorings, and the proofs the API and the CLI give.

`open_audit(database, ledger)` opens it (its tables made on first use); `start_following`
keeps the tree current in a daemon thread, one active follower across processes, writing
a checkpoint every `checkpoint_every` seconds when the tree has grown or an erasure was
recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder

from adapters.audit.signing import CheckpointSigner, open_signer
from adapters.eventstore import event_store
from adapters.keys.erasure_log import ErasureLog
from adapters.postgres.leases import runner_lock_for
from adapters.postgres.listen import ListenWakeup
from adapters.sqlite.locks import FileLock, ProcessLock
from adapters.storage.database import Database
from adapters.storage.merkle_store import MerkleStore
from adapters.storage.sqlstore import SqlStore
from domain.ledger import LessonLedger
from projections.merkle.audit import AuditReport, audit
from projections.merkle.checkpoint import Checkpoint, Reanchoring, signed
from projections.merkle.erasures import covering
from projections.merkle.log_tree import NAME, LogTree, OnPage, TreeFollower, event_of
from projections.merkle.reanchor import reanchor
from projections.merkle.verify import EventProof
from projections.status import ProjectionStatus
from projections.view import PollingWakeup, RunnerLock, Wakeup

POLL_SECONDS = 0.5
"""How often an idle follower looks at the log where it cannot LISTEN."""


class LedgerAudit:
    """The tree over one ledger's log, and what is signed and proven over it."""

    def __init__(self, database: Database, ledger: LessonLedger, signer: CheckpointSigner):
        self.database = database
        self.signer = signer
        self.recorder: ApplicationRecorder = event_store(ledger).recorder
        self._ledger = ledger
        self._sql = SqlStore(database, pool_size=2)
        try:
            self.store = MerkleStore(self._sql, database.events_table)
            self.erasures = ErasureLog(self._sql)
        except BaseException:
            self._sql.close()
            raise
        self.tree = LogTree(self.store, self.recorder)
        self._signing = threading.Lock()
        self._status_lock = self._runner_lock(status_only=True)

    # Keeping the tree.

    def catch_up(self, on_page: OnPage | None = None) -> int:
        """Add every event recorded so far to the tree; the position reached."""
        return self.tree.advance(on_page=on_page)

    def start_following(self, checkpoint_every: float | None = None) -> TreeFollower:
        """A follower in a daemon thread (call `stop()`); with `checkpoint_every`, the
        active one signs a checkpoint that often when the tree has grown."""
        due = _Schedule(checkpoint_every) if checkpoint_every else None
        follower = TreeFollower(
            self.tree,
            self._runner_lock(),
            self._wakeup(),
            after_advance=(lambda: self._scheduled(due)) if due is not None else None,
        )
        follower.start()
        return follower

    def status(self) -> ProjectionStatus:
        position, _ = self.store.position()
        return ProjectionStatus(
            name=NAME,
            position=position,
            head=self.recorder.max_notification_id() or 0,
            lag=self.store.count_events_after(position),
            runner_active=self._status_lock.is_taken(),
            rebuild=None,
        )

    # Checkpoints and proofs.

    def checkpoint(self) -> Checkpoint:
        """Sign the tree and the erasure log as they are now, keep the checkpoint, and
        return it."""
        with self._signing:
            self.erasures.place()
            erasures = covering(self.erasures.covered())
            size = self.tree.size()
            made = signed(self.signer, size, self.tree.root(size), datetime.now(UTC), erasures)
            self.store.save_checkpoint(made)
            return made

    def latest_checkpoint(self) -> Checkpoint | None:
        return self.store.latest_checkpoint()

    def covering(self, size: int) -> Checkpoint:
        """The latest checkpoint if it covers `size` leaves, else a new one."""
        latest = self.latest_checkpoint()
        if latest is not None and latest.size >= size:
            return latest
        return self.checkpoint()

    def consistency(self, old_size: int, checkpoint: Checkpoint) -> list[bytes]:
        """The proof that `checkpoint`'s tree extends the tree of `old_size` leaves."""
        return self.tree.consistency_proof(old_size, checkpoint.size)

    def event_proofs(self, lesson_id: UUID) -> tuple[Checkpoint, dict[int, EventProof]]:
        """A checkpoint and, for each of the lesson's events in its tree, the proof."""
        positions = self.store.positions(lesson_id)
        indexes = {
            version: index
            for version, position in positions.items()
            if (index := self.store.leaf_index(position)) is not None
        }
        checkpoint = self.covering(max(indexes.values(), default=-1) + 1)
        proofs = {
            version: self._proof(positions[version], index, checkpoint.size)
            for version, index in indexes.items()
        }
        return checkpoint, {v: proof for v, proof in proofs.items() if proof is not None}

    def proof_at(self, position: int, checkpoint: Checkpoint) -> EventProof | None:
        """The proof of the event at this position in the checkpoint's tree (None when
        the tree does not have it)."""
        index = self.store.leaf_index(position)
        if index is None or index >= checkpoint.size:
            return None
        return self._proof(position, index, checkpoint.size)

    def _proof(self, position: int, index: int, size: int) -> EventProof | None:
        found = self.recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            return None  # gone from the log since: `audit verify` names it
        stored = found[0]
        lesson_id, version = event_of(stored)
        return EventProof(
            index,
            lesson_id,
            version,
            stored.topic,
            bytes(stored.state),
            self.tree.inclusion_proof(index, size),
        )

    # Verifying.

    def verify(
        self,
        against: Checkpoint | None = None,
        public_key: bytes | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> AuditReport:
        key = public_key if public_key is not None else self.signer.public_key
        erasures = self.erasures.covered()
        return audit(
            self.tree,
            self.recorder,
            key,
            against=against,
            erasures=erasures,
            on_progress=on_progress,
        )

    def events_after(self, position: int) -> int:
        """Events recorded after `position`: after a verify's, those it did not check."""
        return self.store.count_events_after(position)

    def reanchor(self, reason: str) -> Reanchoring | None:
        """After a migration rewrote events: the tree takes their new bytes, signed."""
        return reanchor(self.tree, self.recorder, self.signer, reason, datetime.now(UTC))

    def close(self) -> None:
        self._sql.close()

    # Wiring.

    def _scheduled(self, due: _Schedule) -> None:
        if not due.now():
            return
        latest = self.latest_checkpoint()
        if (
            latest is None
            or latest.size < self.tree.size()
            or latest.erasures is None
            or latest.erasures.count < self.erasures.count()
        ):
            self.checkpoint()

    def _runner_lock(self, *, status_only: bool = False) -> RunnerLock:
        """The tree's runner lock (`status_only`: one that only tells whether it is
        taken, asking on the store's pooled connections)."""
        database = self.database
        if database.kind == "postgresql":
            queries = self._sql.connection if status_only else None
            return runner_lock_for(database, NAME, queries=queries)
        if database.path == ":memory:":
            return ProcessLock(f"memory.{NAME}")
        return FileLock(f"{database.path}.{NAME}.lock", NAME)

    def _wakeup(self) -> Wakeup:
        session = self.database.session
        if session is not None:
            channel: str = getattr(self.recorder, "channel_name")  # noqa: B009
            return ListenWakeup(session, channel)
        return PollingWakeup(POLL_SECONDS)


class _Schedule:
    """True once every `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0.0

    def now(self) -> bool:
        moment = time.monotonic()
        if moment < self._next:
            return False
        self._next = moment + self.seconds
        return True


def open_audit(database: Database, ledger: LessonLedger) -> LedgerAudit:
    """The tamper-evident log of the ledger on this database (LedgerUnavailable, one line,
    without a signing key)."""
    return LedgerAudit(database, ledger, open_signer(database))
