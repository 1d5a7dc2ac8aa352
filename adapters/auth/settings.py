"""The settings of JWT bearer tokens (LESSON_LEDGER_JWT_*). None set: the ledger takes
only its own tokens, as before."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class JwtSettings(BaseSettings):
    """How to verify the JWTs of the product's sign-in; each is LESSON_LEDGER_JWT_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="LESSON_LEDGER_JWT_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    jwks_url: str | None = None
    """Where the provider publishes its public signing keys (RS256, ES256)."""
    secret: SecretStr | None = None
    """A shared HS256 secret (Supabase's legacy JWT secret)."""
    issuer: str | None = None
    """The `iss` every token must carry; required with a JWKS URL or a secret."""
    audience: str | None = None
    """The `aud` every token must carry (Supabase: `authenticated`); required too."""
    provider_claim: str = "sub"
    """The claim that holds the provider id (a UUID)."""
    role_claim: str = "app_role"
    """The claim that holds the role (a name, or a path such as `app_metadata.role`);
    a provider unless it says the admin or worker role."""
    admin_role: str = "admin"
    worker_role: str = "worker"
    leeway_seconds: float = Field(default=30.0, ge=0)
    """Clock skew allowed for `exp`, `nbf` and `iat`."""
    jwks_refresh_seconds: float = Field(default=60.0, ge=0)
    """At most one fetch of the JWKS per this interval (an unknown `kid` asks for one)."""
    jwks_max_age_seconds: float = Field(default=600.0, ge=0)
    """Cached keys are refreshed in the background after this age."""
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)

    @property
    def enabled(self) -> bool:
        """Whether JWTs are taken at all."""
        return bool(self.jwks_url or (self.secret and self.secret.get_secret_value()))
