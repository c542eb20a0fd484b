"""The one place errors become HTTP: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, g, jsonify
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.middleware import RETRY_AFTER_G, as_cutfx_error
from effects import InvalidEffectParameter, UnknownEffect
from shared.errors import CutfxError

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    body: dict[str, str] = {"code": code, "message": message}
    if field:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    return response


def _cutfx_error(exc: CutfxError) -> Response:
    if exc.status >= 500:
        logger.error("request failed", extra={"code": exc.code, "reason": exc.message})
    response = error_response(exc.status, exc.code, exc.message, exc.field)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
        setattr(g, RETRY_AFTER_G, exc.retry_after_s)
    return response


def _invalid_effect_parameter(exc: InvalidEffectParameter) -> Response:
    return error_response(
        422, "invalid_parameter", str(exc), field=f"params.{exc.effect}.{exc.param}"
    )


def _unknown_effect(exc: UnknownEffect) -> Response:
    return error_response(422, "unknown_effect", str(exc), field="effects")


def _rate_limited(exc: RateLimitExceeded) -> Response:
    # flask-limiter adds Retry-After and the X-RateLimit-* headers after this.
    return _cutfx_error(as_cutfx_error(exc))


def _too_large(exc: RequestEntityTooLarge) -> Response:
    return error_response(413, "payload_too_large", "the upload is larger than the limit")


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name)


def _redis_unavailable(exc: redis.RedisError) -> Response:
    logger.error("redis error", extra={"reason": f"{type(exc).__name__}: {exc}"})
    return error_response(503, "not_ready", "the job store is unavailable; retry shortly")


def _unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "something went wrong on our side")


def register(app: Flask) -> None:
    app.register_error_handler(CutfxError, _cutfx_error)
    app.register_error_handler(InvalidEffectParameter, _invalid_effect_parameter)
    app.register_error_handler(UnknownEffect, _unknown_effect)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_unavailable)
    app.register_error_handler(Exception, _unexpected)
