"""The ledger's eventsourcing Application: where its events are stored and how.

The library does what it does well here: the infrastructure factory (SQLite or
PostgreSQL, from the environment), the repository that rebuilds a slot from its events,
the event store and the recorders. Two parts are the ledger's own and wired here by
class, not by topic string: the mapper (adapters/eventstore/mapper.py, orjson in the
library's format) and, on PostgreSQL, the application recorder
(adapters/postgres/recorder.py, without the library's table lock), on the library's
pool as adapters/postgres/factory.py builds it (the URL's libpq options; pooler-safe).
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import (
    ApplicationRecorder,
    JSONTranscoder,
    Mapper,
    Transcoding,
)
from eventsourcing.postgres import PostgresFactory

from adapters.eventstore.mapper import LedgerMapper
from adapters.postgres.factory import LedgerPostgresFactory
from adapters.postgres.recorder import LedgerApplicationRecorder
from adapters.storage.database import APPLICATION_NAME


class DateAsISO(Transcoding):
    """Stores `date` values as ISO text: the default transcoder has no date."""

    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class LedgerApplication(Application[UUID]):
    """The lesson slots' events in the database the environment names."""

    name = APPLICATION_NAME
    env: ClassVar[dict[str, str]] = {
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "SQLITE_LOCK_TIMEOUT": "30",
    }

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=LedgerMapper
        )

    def construct_recorder(self) -> ApplicationRecorder:
        if not isinstance(self.factory, PostgresFactory):
            return super().construct_recorder()
        recorder = LedgerApplicationRecorder(
            self.factory.datastore,
            events_table_name=f"{self.name.lower()}_events",
            pooled=isinstance(self.factory, LedgerPostgresFactory) and self.factory.pooled,
        )
        if self.factory.env_create_table():
            recorder.create_table()
        return recorder
