"""Why a bearer token was refused."""

from __future__ import annotations


class Unauthenticated(Exception):
    """The token is not valid; `str(error)` says why (never quoting the token): a 401."""


class KeysUnavailable(Exception):
    """The signing keys cannot be fetched and none are cached: nothing can be verified
    now (a 503, not the caller's fault)."""


class JwtConfigError(ValueError):
    """The LESSON_LEDGER_JWT_* settings do not make a safe verifier (one line at start)."""
