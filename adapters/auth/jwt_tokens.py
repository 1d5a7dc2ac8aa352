"""JWT bearer tokens of the product's sign-in, verified with PyJWT.

Checked: the signature, `exp` (required), `nbf` and `iat` if present, `iss` and `aud`
(both required and configured), with `leeway_seconds` of clock skew; `sub` is required
and becomes the actor of the token's commands (no name or e-mail from a token is kept).
Algorithms are allowed per key: HS256 only with the configured secret, RS256 and ES256
only with a JWKS key of their own type (adapters/auth/jwks.py); `none` never, and never
an HMAC check with a public key. The role comes from `role_claim` (the admin or worker
role it names, else a provider, whose id is `provider_claim`, a UUID). A refusal says
why, never quoting the token. See docs/decisions/0022-jwt-bearer-tokens.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import jwt

from adapters.auth.errors import JwtConfigError, Unauthenticated
from adapters.auth.jwks import JwksCache
from adapters.auth.settings import JwtSettings
from adapters.storage.tokens import JWT_ID_PREFIX, ApiToken, Role
from domain.commands import check_actor
from domain.keys import canonical_provider_id

KNOWN_ALGORITHMS = frozenset(
    {"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES256K", "ES384", "ES512", "EdDSA", "Ed25519"}
)
"""Algorithm names a refusal may repeat (anything else is "an unknown algorithm")."""
MIN_SECRET_LENGTH = 32

_REFUSALS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "wrong audience: the token is not meant for this ledger"),
    (jwt.InvalidIssuerError, "wrong issuer: the token was not issued by the configured issuer"),
    (jwt.InvalidSignatureError, "bad signature: the token was not signed by a trusted key"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
]


class JwtVerifier:
    """Verifies JWTs and says whom each speaks for."""

    def __init__(self, settings: JwtSettings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.jwks = jwks
        secret = settings.secret.get_secret_value() if settings.secret else ""
        self._secret = secret.encode() if secret else None

    @classmethod
    def from_settings(cls, settings: JwtSettings) -> JwtVerifier | None:
        """A verifier, or None when no JWT setting is set; JwtConfigError if unsafe."""
        if not settings.enabled:
            return None
        missing = [
            f"LESSON_LEDGER_JWT_{name.upper()}"
            for name in ("issuer", "audience")
            if not getattr(settings, name)
        ]
        if missing:
            raise JwtConfigError(
                f"{' and '.join(missing)} must be set with LESSON_LEDGER_JWT_JWKS_URL or "
                "LESSON_LEDGER_JWT_SECRET: a token for another issuer or audience must not pass"
            )
        secret = settings.secret.get_secret_value() if settings.secret else ""
        if secret and len(secret) < MIN_SECRET_LENGTH:
            raise JwtConfigError(
                f"LESSON_LEDGER_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters"
            )
        jwks = None
        if settings.jwks_url:
            _check_jwks_url(settings.jwks_url)
            jwks = JwksCache(
                settings.jwks_url,
                refresh_seconds=settings.jwks_refresh_seconds,
                max_age_seconds=settings.jwks_max_age_seconds,
                timeout_seconds=settings.jwks_timeout_seconds,
            )
        return cls(settings, jwks)

    def verify(self, text: str) -> ApiToken:
        """Whom the token speaks for, and until when (its `expires_at`); Unauthenticated
        (or KeysUnavailable) otherwise."""
        try:
            header = jwt.get_unverified_header(text)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        key = self._key_for(algorithm, header.get("kid"))
        settings = self.settings
        try:
            claims = jwt.decode(
                text,
                key,
                algorithms=[str(algorithm)],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"the token has no {error.claim!r} claim") from None
        except jwt.PyJWTError as error:
            reason = next((text for kind, text in _REFUSALS if isinstance(error, kind)), None)
            raise Unauthenticated(reason or "the token is not valid") from None
        return self._token(claims)

    def close(self) -> None:
        if self.jwks is not None:
            self.jwks.close()

    def _key_for(self, algorithm: object, kid: object) -> Any:
        """The key to check this algorithm with, by the allow-list."""
        if algorithm == "HS256" and self._secret is not None:
            return self._secret
        if algorithm in ("RS256", "ES256") and self.jwks is not None:
            if not isinstance(kid, str):
                raise Unauthenticated("the token names no signing key (kid)")
            key = self.jwks.key(kid)
            if key.algorithm_name != algorithm:
                raise Unauthenticated(
                    f"algorithm not allowed: {algorithm} with a {key.key_type} signing key"
                )
            return key
        name = algorithm if algorithm in KNOWN_ALGORITHMS else "an unknown algorithm"
        raise Unauthenticated(f"algorithm not allowed: {name}")

    def _token(self, claims: dict[str, Any]) -> ApiToken:
        """The identity the verified claims name: the subject acts, in the claimed role."""
        settings = self.settings
        try:
            subject = check_actor(claims["sub"])
        except ValueError:
            raise Unauthenticated("the token's sub must be 1-128 printable characters") from None
        role = _role(claim(claims, settings.role_claim), settings)
        provider_id = None
        if role == "provider":
            value = claim(claims, settings.provider_claim)
            if value is None:
                raise Unauthenticated(f"the token has no {settings.provider_claim!r} claim")
            try:
                provider_id = canonical_provider_id(value)
            except ValueError:
                raise Unauthenticated(
                    f"the token's {settings.provider_claim!r} is not a UUID: "
                    "a provider's id must be one"
                ) from None
        issued = claims.get("iat")
        return ApiToken(
            token_id=f"{JWT_ID_PREFIX}{subject}",
            role=role,
            provider_id=provider_id,
            name=subject,
            created_at=(
                datetime.fromtimestamp(issued, UTC).isoformat(timespec="seconds")
                if isinstance(issued, int | float)
                else ""
            ),
            kind="jwt",
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested claims (`app_metadata.role`)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _role(value: Any, settings: JwtSettings) -> Role:
    """Admin or worker when the claim (a name or a list of names) says so; else provider."""
    names = value if isinstance(value, list) else [value]
    if settings.admin_role in names:
        return "admin"
    if settings.worker_role in names:
        return "worker"
    return "provider"


def _check_jwks_url(url: str) -> None:
    """HTTPS, or plain HTTP on the loopback interface only (keys fetched in clear text
    could be swapped on the way)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        try:
            loopback = parts.hostname == "localhost" or ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
    raise JwtConfigError(
        "LESSON_LEDGER_JWT_JWKS_URL must be an https:// URL (http:// only on the loopback)"
    )
