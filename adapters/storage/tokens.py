"""API bearer tokens: roles, kept in the database as hashes, compared in constant time.

A token reads `llt_<token id>_<secret>`. Only a SHA-256 of the secret is stored (the
secret is 256 random bits, so a slow hash adds nothing), and the token is shown once,
when it is created.

A token found valid is remembered by the store for `cache_seconds` (by a hash of its
text), so a busy API does not read the database for every request. Revoking through a
store forgets the token there at once; in other processes (other API workers, after
`lesson-ledger tokens revoke`) a revoked token is refused within `cache_seconds`. A JWT
of the product's sign-in, once verified (adapters/auth/), is remembered here the same way,
never past its expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from adapters.storage.sqlstore import SqlStore
from domain.keys import canonical_provider_id

Role = Literal["admin", "worker", "provider"]
TokenKind = Literal["ledger", "jwt"]
ROLES: tuple[str, ...] = get_args(Role)
_PREFIX = "llt"
JWT_ID_PREFIX = "jwt:"
"""The ids of JWTs' identities (`jwt:<sub>`); the ledger's own tokens' ids never start so."""


@dataclass(frozen=True)
class ApiToken:
    """Who a bearer token speaks for."""

    token_id: str
    role: Role
    provider_id: str | None
    name: str
    created_at: str
    revoked_at: str | None = None
    kind: TokenKind = "ledger"
    """One of the ledger's own tokens, or a JWT of the product's sign-in."""
    expires_at: datetime | None = None
    """When the token stops being valid (a JWT's `exp`); None: when it is revoked."""

    @property
    def actor(self) -> str:
        """The name recorded as the actor of the token's commands (a JWT's subject)."""
        return self.name

    @property
    def source(self) -> str:
        """The `source` its commands are recorded with: which kind of token acted."""
        return "api-jwt" if self.kind == "jwt" else "api"


class TokenStore:
    """Creates, checks, lists and revokes API tokens."""

    CACHE_LIMIT = 10_000
    """Tokens remembered at most (there are few; the bound is against surprises)."""

    def __init__(self, sql: SqlStore, cache_seconds: float = 5.0) -> None:
        self.sql = sql
        self.cache_seconds = cache_seconds
        self._valid: dict[str, tuple[float, ApiToken]] = {}  # text's hash -> (until, token)
        self.table = sql.table("api_tokens")
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " token_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, role TEXT NOT NULL,"
            " provider_id TEXT, name TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)"
        )

    def create(
        self, role: str, provider_id: str | None = None, name: str | None = None
    ) -> tuple[ApiToken, str]:
        """A new token and its text, which is not stored and cannot be shown again."""
        if role not in ROLES:
            raise ValueError(f"--role: must be one of {', '.join(ROLES)}, not {role!r}")
        if role == "provider":
            if provider_id is None:
                raise ValueError("--provider-id: is needed: a provider token acts for one")
            try:
                provider_id = canonical_provider_id(provider_id)
            except ValueError as invalid:
                raise ValueError(f"--provider-id: {invalid}") from None
        elif provider_id is not None:
            raise ValueError(
                f"--provider-id: only a provider token is bound to a provider, not {role!r}"
            )
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        token = ApiToken(
            token_id=token_id,
            role=role,  # type: ignore[arg-type]
            provider_id=provider_id,
            name=name or f"{role}-{token_id}",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.sql.run(
            f"INSERT INTO {self.table} (token_id, secret_hash, role, provider_id, name, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (token_id, _hash(secret), role, provider_id, token.name, token.created_at),
        )
        return token, f"{_PREFIX}_{token_id}_{secret}"

    def remembered(self, text: str) -> ApiToken | None:
        """The token this text is, if it was found valid less than `cache_seconds` ago
        (no database read); else None, and `authenticate` must decide."""
        found = self._valid.get(_hash(text))
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def authenticate(self, text: str) -> ApiToken | None:
        """The active token this text is, or None."""
        token = self._authenticate(text)
        if token is not None:
            self.remember(text, token)
        return token

    def remember(self, text: str, token: ApiToken) -> None:
        """Remember a token found valid for `cache_seconds`, or less: never past its
        `expires_at` (a JWT's)."""
        seconds = self.cache_seconds
        if token.expires_at is not None:
            seconds = min(seconds, token.expires_at.timestamp() - time.time())
        if seconds <= 0:
            return
        if len(self._valid) >= self.CACHE_LIMIT:
            self._valid.clear()
        self._valid[_hash(text)] = (time.monotonic() + seconds, token)

    def _authenticate(self, text: str) -> ApiToken | None:
        prefix, _, rest = text.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not token_id or not secret:
            return None
        rows = self.sql.run(
            f"SELECT token_id, role, provider_id, name, created_at, revoked_at, secret_hash"
            f" FROM {self.table} WHERE token_id = %s",
            (token_id,),
        )
        # Compare even when the id is unknown, so timing does not tell ids apart.
        stored = rows[0][6] if rows else _hash("")
        if not hmac.compare_digest(stored, _hash(secret)) or not rows or rows[0][5]:
            return None
        return ApiToken(*rows[0][:6])

    def list(self) -> list[ApiToken]:
        rows = self.sql.run(
            f"SELECT token_id, role, provider_id, name, created_at, revoked_at"
            f" FROM {self.table} ORDER BY created_at, token_id"
        )
        return [ApiToken(*row) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke a token; False when no active token has this id."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self.sql.transaction() as cursor:
            found = cursor.run(
                f"SELECT token_id FROM {self.table} WHERE token_id = %s AND revoked_at IS NULL",
                (token_id,),
            )
            if found:
                cursor.run(
                    f"UPDATE {self.table} SET revoked_at = %s WHERE token_id = %s", (now, token_id)
                )
        # Forgotten once revoked, so no check in between remembers it again.
        self._valid = {k: e for k, e in self._valid.items() if e[1].token_id != token_id}
        return bool(found)

    def has_active_admin(self) -> bool:
        rows = self.sql.run(
            f"SELECT count(*) FROM {self.table} WHERE role = 'admin' AND revoked_at IS NULL"
        )
        return bool(rows[0][0])


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
