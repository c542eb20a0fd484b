"""The storage interface every backend implements."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

#: Keys are content addresses like "results/ab/abcdef.webp": no traversal, no absolute paths.
VALID_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: int


class Storage(ABC):
    """put / get / exists / signed_url over object keys."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def signed_url(self, key: str, ttl_s: int) -> SignedUrl: ...

    def unwrapped(self) -> Storage:
        """The backend itself, under any wrapper (retries)."""
        return self


def check_key(key: str) -> str:
    if not VALID_KEY.match(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key
