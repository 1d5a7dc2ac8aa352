"""The audit pages' sessions, kept in the ledger's database so that every server process
knows them and signing out ends a session everywhere.

A session is made at sign-in from a valid API token and speaks for that token (its id,
role, provider and kind), never holding its text. Only a SHA-256 of the session's id is
stored (the id is 256 random bits, sent to the browser in a signed cookie). A session ends
when it is signed out, when it expires, or when its token is revoked; one made from a
JWT expires with the JWT at the latest.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import JWT_ID_PREFIX, ApiToken, TokenKind


@dataclass(frozen=True)
class PageSession:
    """A signed-in browser: the token it speaks for, and until when."""

    token: ApiToken
    expires_at: datetime


class PageSessions:
    """Starts, finds and ends page sessions."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql
        self.table = sql.table("page_sessions")
        self.tokens_table = sql.table("api_tokens")
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " session_hash TEXT PRIMARY KEY, token_id TEXT NOT NULL, role TEXT NOT NULL,"
            " provider_id TEXT, name TEXT NOT NULL, token_created_at TEXT NOT NULL,"
            " created_at TEXT NOT NULL, expires_at TEXT NOT NULL, ended_at TEXT)"
        )

    def start(self, token: ApiToken, lifetime: timedelta) -> tuple[str, PageSession]:
        """A new session for this token: its id (for the cookie) and the session, which
        ends after `lifetime` or when the token does (a JWT's `exp`), whichever is first."""
        session_id = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        ends = now + lifetime
        if token.expires_at is not None:
            ends = min(ends, token.expires_at)
        session = PageSession(token, ends)
        self.sql.run(
            f"INSERT INTO {self.table} (session_hash, token_id, role, provider_id, name,"
            " token_created_at, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                _hash(session_id),
                token.token_id,
                token.role,
                token.provider_id,
                token.name,
                token.created_at,
                now.isoformat(),
                session.expires_at.isoformat(),
            ),
        )
        self._forget_expired(now)
        return session_id, session

    def find(self, session_id: str) -> PageSession | None:
        """The live session with this id: not ended, not expired, its token not revoked
        (a token the ledger did not issue, such as a JWT, has no row to revoke)."""
        rows = self.sql.run(
            f"SELECT s.token_id, s.role, s.provider_id, s.name, s.token_created_at,"
            f" s.expires_at FROM {self.table} s LEFT JOIN {self.tokens_table} t"
            " ON t.token_id = s.token_id"
            " WHERE s.session_hash = %s AND s.ended_at IS NULL AND t.revoked_at IS NULL",
            (_hash(session_id),),
        )
        if not rows:
            return None
        token_id, role, provider_id, name, created_at, expires_at = rows[0]
        expires = datetime.fromisoformat(expires_at)
        if expires <= datetime.now(UTC):
            return None
        kind: TokenKind = "jwt" if token_id.startswith(JWT_ID_PREFIX) else "ledger"
        token = ApiToken(token_id, role, provider_id, name, created_at, kind=kind)
        return PageSession(token, expires)

    def end(self, session_id: str) -> None:
        """Sign out: the session is refused from now on, by every process."""
        self.sql.run(
            f"UPDATE {self.table} SET ended_at = %s WHERE session_hash = %s AND ended_at IS NULL",
            (datetime.now(UTC).isoformat(), _hash(session_id)),
        )

    def _forget_expired(self, now: datetime) -> None:
        """Sessions a day past their end go: nothing reads them again."""
        cut = (now - timedelta(days=1)).isoformat()
        self.sql.run(f"DELETE FROM {self.table} WHERE expires_at < %s", (cut,))


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
