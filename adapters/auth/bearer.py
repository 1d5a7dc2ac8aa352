"""A bearer token to whom it speaks for: a JWT (three base64url parts) goes to the JWT
verifier, when JWTs are configured; anything else to the ledger's token store. A token
found valid is remembered in the token store's short cache (a JWT never past its expiry),
so most requests check nothing but that cache."""

from __future__ import annotations

import re

from adapters.auth.errors import Unauthenticated
from adapters.auth.jwt_tokens import JwtVerifier
from adapters.storage.tokens import ApiToken, TokenStore

JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""header.payload.signature, base64url (the signature empty for `alg: none`, refused)."""


class BearerTokens:
    """The ledger's own tokens, and JWTs when a verifier is given."""

    def __init__(self, tokens: TokenStore, jwt: JwtVerifier | None = None) -> None:
        self.tokens = tokens
        self.jwt = jwt

    def remembered(self, text: str) -> ApiToken | None:
        """The token, if it was found valid a moment ago (no I/O, no signature check)."""
        return self.tokens.remembered(text)

    def authenticate(self, text: str) -> ApiToken:
        """Whom the token speaks for; Unauthenticated saying why not. May read the
        database or fetch signing keys: call it off the event loop."""
        if self.jwt is not None and JWT_SHAPE.fullmatch(text):
            token = self.jwt.verify(text)
            self.tokens.remember(text, token)
            return token
        found = self.tokens.authenticate(text)
        if found is None:
            raise Unauthenticated("the bearer token is not valid or was revoked")
        return found

    def close(self) -> None:
        if self.jwt is not None:
            self.jwt.close()
