"""Client tokens: short-lived, signed credentials a shop's server hands to a browser.

A token names the API key it acts for, the one origin it may be used from, when
it expires and, optionally, how many jobs it may submit. It is signed (HMAC-SHA256
through itsdangerous, under a key derived from CUTFX_SIGNING_KEY) and stored
nowhere: the service checks the signature, the expiry and that the key still
exists. Only its id is kept, on the jobs it submits.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import redis
from itsdangerous import BadSignature, URLSafeSerializer

from shared.errors import Unauthorized
from shared.jobs.store import token_jobs_key
from shared.signing import Purpose, derive_key

TOKEN_PREFIX = "ct_"
TOKEN_ID_PREFIX = "tok_"
SALT = "cutfx.client-token"


@dataclass(frozen=True)
class ClientToken:
    token_id: str
    key_id: str
    origin: str
    expires_at: int
    max_jobs: int | None = None

    def to_payload(self) -> dict[str, object]:
        return {
            "t": self.token_id,
            "k": self.key_id,
            "o": self.origin,
            "e": self.expires_at,
            "q": self.max_jobs,
        }

    @classmethod
    def from_payload(cls, payload: object) -> ClientToken:
        if not isinstance(payload, dict):
            raise Unauthorized("the client token is not valid")
        try:
            return cls(
                token_id=str(payload["t"]),
                key_id=str(payload["k"]),
                origin=str(payload["o"]),
                expires_at=int(payload["e"]),
                max_jobs=None if payload["q"] is None else int(payload["q"]),
            )
        except (KeyError, TypeError, ValueError):
            raise Unauthorized("the client token is not valid") from None


def is_client_token(credential: str) -> bool:
    return credential.startswith(TOKEN_PREFIX)


class TokenCodec:
    """Issues and verifies client tokens under the signing key's client-token key."""

    def __init__(self, signing_key: str) -> None:
        self._serializer = URLSafeSerializer(
            derive_key(signing_key, Purpose.CLIENT_TOKENS),
            salt=SALT,
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def issue(
        self, key_id: str, origin: str, ttl_s: int, max_jobs: int | None
    ) -> tuple[str, ClientToken]:
        token = ClientToken(
            token_id=TOKEN_ID_PREFIX + secrets.token_hex(8),
            key_id=key_id,
            origin=origin,
            expires_at=int(time.time()) + ttl_s,
            max_jobs=max_jobs,
        )
        return TOKEN_PREFIX + self._serializer.dumps(token.to_payload()), token

    def verify(self, credential: str, now: float | None = None) -> ClientToken:
        """The token `credential` carries; Unauthorized when forged, altered or expired."""
        try:
            payload = self._serializer.loads(credential.removeprefix(TOKEN_PREFIX))
        except BadSignature:
            raise Unauthorized("the client token is not valid") from None
        token = ClientToken.from_payload(payload)
        if (time.time() if now is None else now) >= token.expires_at:
            raise Unauthorized("the client token has expired; ask the shop's server for a new one")
        return token


# The job quota of client tokens: a counter per token id that lives as long as the token.


class TokenQuota:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def claim(self, token: ClientToken) -> bool:
        """Count one more job against the token; False (and nothing counted) past its quota."""
        if token.max_jobs is None:
            return True
        key = token_jobs_key(token.token_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expireat(key, token.expires_at + 1)
            submitted, _ = pipe.execute()
        if int(submitted) > token.max_jobs:
            self.redis.decr(key)
            return False
        return True

    def release(self, token: ClientToken) -> None:
        """Give back a claim whose job was not created."""
        if token.max_jobs is not None:
            self.redis.decr(token_jobs_key(token.token_id))
