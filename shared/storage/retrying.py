"""Riding out storage faults: every call retried with backoff, within a time budget.

Wraps any backend. A TransientStorageError (a timeout, a reset, a 5xx or 429, a
failed disk write) is retried with jittered exponential backoff (tenacity) until
the budget (CUTFX_STORAGE_RETRY_S) is spent; then it propagates and the result
fails with `storage_unavailable`. Other errors are not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from shared.errors import TransientStorageError
from shared.storage.base import SignedUrl, Storage

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 8.0


class RetryingStorage(Storage):
    def __init__(self, inner: Storage, budget_s: float) -> None:
        self.inner = inner
        self.budget_s = budget_s

    def _retrying(self, call: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientStorageError),
            wait=wait_exponential_jitter(multiplier=FIRST_WAIT_S, max=MAX_WAIT_S),
            stop=stop_after_delay(self.budget_s),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        return retrying(call)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._retrying(lambda: self.inner.put(key, data, content_type))

    def get(self, key: str) -> bytes:
        return self._retrying(lambda: self.inner.get(key))

    def exists(self, key: str) -> bool:
        return self._retrying(lambda: self.inner.exists(key))

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        return self.inner.signed_url(key, ttl_s)

    def unwrapped(self) -> Storage:
        return self.inner.unwrapped()

    def __getattr__(self, name: str) -> object:
        # A backend's own extras (LocalStorage.path_of) stay reachable through the wrapper.
        return getattr(self.inner, name)
