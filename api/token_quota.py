"""The job quota of client tokens: a counter per token id that lives as long as the token."""

from __future__ import annotations

import redis

from api.tokens import ClientToken
from shared.jobs.keys import token_jobs_key


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
