"""Delivering a job's events to its webhook: in order, signed, at least once.

One delivery task per job runs at a time (a Redis lock); it sends every event
after the job's cursor, advancing the cursor as each is acknowledged with a 2xx.
A failure raises, and Celery retries the task with backoff; the events wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import requests
from redis.exceptions import LockError
from redis.lock import Lock
from requests_hardened import Manager

from shared.context import ServiceContext
from shared.errors import DeliveryBusy, DeliveryRefused, InvalidParameter, WebhookDeliveryFailed
from shared.jobs.model import Webhook, event_view
from shared.jobs.store import (
    START_OF_STREAM,
    JobEvent,
    read_events,
    webhook_cursor_key,
    webhook_lock_key,
)
from shared.outbound import (
    DELIVERY_DEADLINE_S,
    delivery_manager,
    post_within_limits,
    redacted,
)
from shared.telemetry import WEBHOOK_DELIVERIES, trace_span
from shared.webhooks import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    JOB_ID_HEADER,
    SIGNATURE_HEADER,
    sign,
    webhook_secret,
)

logger = logging.getLogger(__name__)


def deliver_pending(ctx: ServiceContext, job_id: str) -> int:
    """Send the events the webhook has not received; return how many were sent."""
    webhook = ctx.jobs.webhook(job_id)
    if webhook is None:
        return 0
    # An owner-token lock: a delivery that outlived its TTL cannot delete a successor's lock.
    ttl_s = ctx.settings.webhook_lock_ttl_s
    lock = ctx.redis.lock(webhook_lock_key(job_id), timeout=ttl_s, blocking=False)
    if not lock.acquire():
        raise DeliveryBusy(job_id)
    try:
        return _deliver_after_cursor(ctx, job_id, webhook, lock)
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _deliver_after_cursor(ctx: ServiceContext, job_id: str, webhook: Webhook, lock: Lock) -> int:
    stored_cursor: Any = ctx.redis.get(webhook_cursor_key(job_id))
    cursor = str(stored_cursor or START_OF_STREAM)
    secret = webhook_secret(ctx.settings.signing_key, webhook.key_id)
    sent = 0
    for event in read_events(ctx.redis, job_id, cursor, block_ms=None):
        # Before each POST the lock is renewed for longer than a POST may take, so no
        # second delivery starts while this one waits on a slow receiver; a renewal
        # that finds the lock taken raises LockNotOwnedError and this delivery stops.
        lock.extend(ctx.settings.webhook_lock_ttl_s + DELIVERY_DEADLINE_S, replace_ttl=True)
        if event.type in webhook.events:
            _post(ctx, webhook.url, secret, job_id, event, _payload(ctx, job_id, event))
            sent += 1
        ctx.redis.set(webhook_cursor_key(job_id), event.id, ex=ctx.settings.result_ttl_s)
    return sent


def _payload(ctx: ServiceContext, job_id: str, event: JobEvent) -> bytes:
    data = event_view(event.data, ctx.storage, ctx.settings.url_ttl_s)
    body = {"id": event.id, "type": event.type, "job_id": job_id, "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


def _post(
    ctx: ServiceContext, url: str, secret: str, job_id: str, event: JobEvent, body: bytes
) -> None:
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event.type,
        EVENT_ID_HEADER: event.id,
        JOB_ID_HEADER: job_id,
    }
    manager = delivery_manager(ctx.settings.webhook_allow_loopback)
    try:
        with trace_span("webhook POST", **{"cutfx.event": event.type}):
            _post_acknowledged(manager, url, body, headers, f"{event.type} to {redacted(url)}")
    except WebhookDeliveryFailed:
        ctx.metrics.increment(WEBHOOK_DELIVERIES, {"outcome": "failed"})
        raise
    ctx.metrics.increment(WEBHOOK_DELIVERIES, {"outcome": "delivered"})
    logger.info("webhook delivered", extra={"event": event.type, "event_id": event.id})


def _post_acknowledged(
    manager: Manager, url: str, body: bytes, headers: dict[str, str], shown: str
) -> None:
    """POST `body`; WebhookDeliveryFailed unless the receiver answers 2xx."""
    try:
        response = post_within_limits(manager, url, body, headers)
    except (requests.RequestException, DeliveryRefused, InvalidParameter) as exc:
        raise WebhookDeliveryFailed(f"{shown}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise WebhookDeliveryFailed(f"{shown}: HTTP {response.status_code}")
