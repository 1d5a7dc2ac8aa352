"""The provider's public signing keys, fetched from its JWKS URL and cached.

Fetched on first use; fetched again when a token names a key (`kid`) not in the cache
(a rotation), at most once per `refresh_seconds`; refreshed in the background once the
keys are older than `max_age_seconds` (a key the provider withdrew stops working then).
When the URL cannot be reached, the last good keys stay in use. Only keys this ledger
verifies with are kept: RSA keys for RS256 and P-256 keys for ES256, each bound to its
one algorithm; a symmetric key in a JWKS is never used. PyJWT builds the keys; the
fetching and caching is here because PyJWKClient neither rate-limits refreshes nor keeps
the last good keys when the URL is down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from adapters.auth.errors import KeysUnavailable, Unauthenticated

log = logging.getLogger("lesson_ledger.auth")

MAX_JWKS_BYTES = 1024 * 1024
ALGORITHM_OF: dict[tuple[str, str | None], str] = {("RSA", None): "RS256", ("EC", "P-256"): "ES256"}
"""The one algorithm each usable key type is verified with, by (kty, crv)."""


class JwksCache:
    """The signing keys at one JWKS URL, by `kid`. Safe to use from several threads."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float = 60.0,
        max_age_seconds: float = 600.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._client = httpx.Client(timeout=timeout_seconds, follow_redirects=True)
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = -math.inf  # last good fetch
        self._tried_at = -math.inf  # last attempt, good or not
        self._lock = threading.Lock()
        self._background: threading.Thread | None = None
        self.fetches = 0
        """Attempts so far (for tests and metrics)."""

    def key(self, kid: str) -> jwt.PyJWK:
        """The key with this id; Unauthenticated if the JWKS has none, KeysUnavailable if
        no keys could ever be fetched."""
        keys = self._keys
        if keys is not None and kid in keys:
            if self._clock() - self._fetched_at > self.max_age_seconds:
                self._refresh_in_background()
            return keys[kid]
        with self._lock:  # one fetch at a time; the others find its keys
            keys = self._keys
            if (keys is None or kid not in keys) and self._may_fetch():
                self._fetch()
                keys = self._keys
        if keys is None:
            raise KeysUnavailable(
                "the signing keys cannot be fetched from the JWKS URL; try again later"
            )
        found = keys.get(kid)
        if found is None:
            raise Unauthenticated("unknown signing key: the token's kid is not in the JWKS")
        return found

    def close(self) -> None:
        self._client.close()

    def _may_fetch(self) -> bool:
        return self._clock() - self._tried_at >= self.refresh_seconds

    def _refresh_in_background(self) -> None:
        # Never waits: while another thread fetches, the cached key answers at once.
        if not self._lock.acquire(blocking=False):
            return
        try:
            running = self._background is not None and self._background.is_alive()
            if running or not self._may_fetch():
                return
            self._tried_at = self._clock()  # claimed: no second thread starts meanwhile
            self._background = threading.Thread(
                target=self._locked_fetch, name="jwks-refresh", daemon=True
            )
            self._background.start()
        finally:
            self._lock.release()

    def _locked_fetch(self) -> None:
        with self._lock:
            self._fetch()

    def _fetch(self) -> None:
        """Fetch and keep the usable keys; on any failure keep the last good ones."""
        self._tried_at = self._clock()
        self.fetches += 1
        try:
            response = self._client.get(self.url, headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise ValueError(f"it answered {response.status_code}")
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError(f"its answer is over {MAX_JWKS_BYTES} bytes")
            keys = usable_keys(_document(response))
        except (httpx.HTTPError, ValueError) as error:
            kept = "keeping the last good keys" if self._keys else "no keys cached"
            log.warning("JWKS fetch from %s failed (%s); %s", self.url, error, kept)
            return
        self._keys = keys
        self._fetched_at = self._clock()


def _document(response: httpx.Response) -> Any:
    try:
        return response.json()
    except RecursionError:  # no JWKS is nested that deep
        raise ValueError("its answer is nested too deeply to be a JWKS") from None


def usable_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The document's signing keys this ledger verifies with, by kid; ValueError if none."""
    found = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(found, list):
        raise ValueError('the JWKS has no "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    for entry in found:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        curve = entry.get("crv")
        algorithm = ALGORITHM_OF.get(
            (str(entry.get("kty")), curve if isinstance(curve, str) else None)
        )
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue  # a key type or algorithm outside the allow-list
        if entry.get("use", "sig") != "sig" or "d" in entry:
            continue  # an encryption key, or a private key published by mistake
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=algorithm)
        except jwt.PyJWTError:
            continue
    if not keys:
        raise ValueError("the JWKS holds no RS256 or ES256 signing key")
    return keys
