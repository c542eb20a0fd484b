"""The API described: GET /v1/openapi.json (the OpenAPI 3 document, with the effect
parameters from the registry) and GET /v1/effects (the catalogue)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.account import MAX_JOBS_PER_TOKEN, MIN_TTL_S
from api.idempotency import MAX_KEY_LENGTH
from api.jobs import KEEPALIVE_MS_RANGE, MAX_WAIT_S
from api.upload import CANCEL_AFTER_RANGE_S, PHOTO, PHOTO_URL_FIELD, job_form
from effects import list_effects
from shared.jobs.model import CHECK_CODES, JobStatus, ResultStatus
from shared.settings import DEFAULT_CLIENT_TOKEN_TTL_S, MAX_CLIENT_TOKEN_TTL_S

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}

RESULT_SCHEMA = {
    "type": "object",
    "required": ["status", "cached", "timings"],
    "properties": {
        "status": {"type": "string", "enum": list(ResultStatus)},
        "cached": {"type": "boolean"},
        "url": {"type": "string", "format": "uri"},
        "url_expires_at": {"type": "integer", "description": "Unix time"},
        "content_type": {"type": "string"},
        "bytes": {"type": "integer"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "error": {"type": "object"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        "kept": {
            "type": "object",
            "description": "The result's kept copy (POST /v1/jobs/{id}/keep): outlives the TTL",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "url_expires_at": {"type": "integer", "description": "Unix time"},
                "bytes": {"type": "integer"},
            },
        },
        "subject": {
            "type": "object",
            "description": "The subject's box in the uploaded photo's pixels and the share "
            "of the frame it covers (0 to 1)",
            "properties": {
                "x": {"type": "integer"},
                "y": {"type": "integer"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "coverage": {"type": "number"},
            },
        },
        "escalation": {
            "type": "object",
            "description": "The cutout was run again in base mode (CUTFX_ESCALATE): the "
            "mode, which cutout was kept ('base' or 'fast'), each one's share of unsure "
            "alpha, and the seconds it took",
            "properties": {
                "mode": {"type": "string"},
                "model_id": {"type": "string"},
                "chosen": {"type": "string", "enum": ["base", "fast"]},
                "uncertain": {"type": "object"},
                "seconds": {"type": "number"},
            },
        },
        "checks": {
            "type": "array",
            "description": "The checks the cutout failed: warnings a shop may show its "
            "customer (the result is made all the same; with strict=true, no_subject fails "
            "the cutout). Empty when the photo passed them all.",
            "items": {
                "type": "object",
                "required": ["code", "value", "threshold", "message"],
                "properties": {
                    "code": {"type": "string", "enum": list(CHECK_CODES)},
                    "value": {"type": "number"},
                    "threshold": {"type": "number"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}

JOB_SCHEMA = {
    "type": "object",
    "required": ["id", "status", "results", "links"],
    "properties": {
        "id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": list(JobStatus),
        },
        "created_at": {"type": "number"},
        "finished_at": {"type": ["number", "null"]},
        "effects": {"type": "array", "items": {"type": "string"}},
        "primary": {"type": ["string", "null"]},
        "format": {"type": "string"},
        "quality": {"type": ["integer", "null"]},
        "input": {"type": "object"},
        "options": {
            "type": "object",
            "description": "The output options that differ from the defaults",
        },
        "results": {
            "type": "object",
            "additionalProperties": {"$ref": "#/components/schemas/Result"},
        },
        "links": {"type": "object"},
        "last_event_id": {"type": "string"},
        "cancel_at": {"type": "number", "description": "Unix time of its Cancel-After"},
        "kept": {"type": "boolean", "description": "Some of its results are kept"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}

USAGE_FIGURES = {
    "type": "object",
    "properties": {
        "jobs": {"type": "integer"},
        "photos": {"type": "integer"},
        "inference_s": {"type": "number"},
        "bytes_stored": {"type": "integer"},
        "bytes_kept": {"type": "integer"},
        "results": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
USAGE_SCHEMA = {
    "type": "object",
    "required": ["key_id", "from", "to", "days", "total"],
    "properties": {
        "key_id": {"type": "string"},
        "from": {"type": "string", "format": "date"},
        "to": {"type": "string", "format": "date"},
        "days": {
            "type": "array",
            "items": {
                "allOf": [
                    USAGE_FIGURES,
                    {"type": "object", "properties": {"date": {"type": "string"}}},
                ]
            },
        },
        "total": USAGE_FIGURES,
        "allowance": {
            "type": "object",
            "properties": {
                "photos_per_month": {"type": "integer"},
                "used": {"type": "integer"},
                "left": {"type": "integer"},
            },
        },
    },
}

KEEP_REQUEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "results": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The results to keep (cutout, effect names); all that succeeded "
            "when left out",
        }
    },
}

CLIENT_TOKEN_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["origin"],
    "additionalProperties": False,
    "properties": {
        "origin": {
            "type": "string",
            "description": "The shop page's origin (scheme://host[:port]); one of the key's",
        },
        "ttl_s": {
            "type": "integer",
            "minimum": MIN_TTL_S,
            "maximum": MAX_CLIENT_TOKEN_TTL_S,
            "default": DEFAULT_CLIENT_TOKEN_TTL_S,
        },
        "max_jobs": {"type": "integer", "minimum": 1, "maximum": MAX_JOBS_PER_TOKEN},
    },
}

CLIENT_TOKEN_SCHEMA = {
    "type": "object",
    "required": ["token", "token_id", "origin", "expires_at"],
    "properties": {
        "token": {"type": "string", "description": "Send as 'Authorization: Bearer <token>'"},
        "token_id": {"type": "string"},
        "origin": {"type": "string"},
        "expires_at": {"type": "integer", "description": "Unix time"},
        "max_jobs": {"type": ["integer", "null"]},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


ERROR_DESCRIPTIONS = {
    "400": "Malformed request or undecodable image",
    "401": "Missing or invalid API key (or metrics token)",
    "403": "Bad or expired signed link; a credential used from an origin it is not allowed "
    "on; a client token's quota spent or a route it may not use; an image_url bucket the "
    "service does not read (bucket_not_allowed)",
    "404": "Unknown job or object (another API key's job is unknown too)",
    "409": "Idempotency-Key reused for another request; keeping a job that has not "
    "finished (job_unfinished) or a result that did not succeed (result_not_ready)",
    "410": "A result swept past the TTL before it was kept (result_expired)",
    "413": "Upload too large, or the photo at image_url (fetch_too_large)",
    "415": "Unsupported image format",
    "422": "Invalid parameter; a photo image_url could not give (fetch_failed, fetch_refused, "
    "fetch_timeout)",
    "429": "Rate limit, unfinished-job cap, open-stream cap (too_many_streams) or monthly "
    "allowance (allowance_exhausted) reached (Retry-After says when to retry)",
    "503": "Not ready, busy decoding, or Redis unavailable (Retry-After when known)",
}
#: What any route may answer: limits and an unavailable job store.
COMMON_ERRORS = ("429", "503")


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _error(ERROR_DESCRIPTIONS[code]) for code in (*codes, *COMMON_ERRORS)}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _job_id_param() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict[str, Any]:
    effect_names = [effect.name for effect in list_effects()]
    job_form_fields = job_form(tuple(effect_names))
    cancel_low, cancel_high = CANCEL_AFTER_RANGE_S
    keepalive_low, keepalive_high = KEEPALIVE_MS_RANGE
    job_ref = {"$ref": "#/components/schemas/Job"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cutfx",
            "version": "1",
            "description": "Background removal and effects.",
        },
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, "Result": RESULT_SCHEMA, "Job": JOB_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Queue a photo for background removal and effects",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "Repeat safely: the same key returns the same job",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_KEY_LENGTH,
                            },
                        },
                        {
                            "name": "Cancel-After",
                            "in": "header",
                            "description": "Cancel unfinished work this long after submit: "
                            f"seconds ('90') or a duration like '1m30s' ({cancel_low:g} to "
                            f"{cancel_high:g} s)",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "description": "The photo uploaded (multipart) or by its address "
                        f"({PHOTO_URL_FIELD}, multipart or JSON); the same fields either way.",
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {f.name: f.schema() for f in job_form_fields},
                                    "additionalProperties": False,
                                    "anyOf": [
                                        {"required": [PHOTO.field]},
                                        {"required": [PHOTO_URL_FIELD]},
                                    ],
                                }
                            },
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": [PHOTO_URL_FIELD],
                                    "properties": {
                                        f.name: f.schema() for f in job_form_fields if not f.is_file
                                    },
                                    "additionalProperties": False,
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": _json(
                            "Queued",
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "status": {"type": "string"},
                                    "effects": {"type": "array", "items": {"type": "string"}},
                                    "links": {"type": "object"},
                                },
                            },
                        ),
                        **_errors("400", "401", "403", "409", "413", "415", "422"),
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "Job status and signed URLs of finished results",
                    "parameters": [
                        _job_id_param(),
                        {
                            "name": "wait",
                            "in": "query",
                            "description": f"Long-poll: hold up to N seconds (max {MAX_WAIT_S:g}) "
                            "for a change",
                            "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "description": "With wait: the last_event_id already seen",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _json("The job", job_ref),
                        **_errors("401", "404", "422"),
                    },
                },
                "delete": {
                    "summary": "Cancel what has not finished; finished results stay",
                    "description": "Unfinished results become canceled and the job "
                    "finishes as canceled; a finished job is answered as it is.",
                    "parameters": [_job_id_param()],
                    "responses": {
                        "200": _json("The job after the cancel", job_ref),
                        **_errors("401", "403", "404"),
                    },
                },
            },
            "/v1/jobs/{job_id}/keep": {
                "post": {
                    "summary": "Keep a finished job's results past the TTL (an order)",
                    "description": "Copies the named results (all that succeeded when none "
                    "are named) where neither CUTFX_RESULT_TTL_S nor the storage sweep "
                    "reaches, and keeps the job's record; idempotent.",
                    "parameters": [_job_id_param()],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {"schema": KEEP_REQUEST_SCHEMA},
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"results": {"type": "string"}},
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json("The job, its kept results with their own URLs", job_ref),
                        **_errors("400", "401", "404", "409", "410"),
                    },
                },
                "delete": {
                    "summary": "Release the kept results: the job expires a TTL from now",
                    "parameters": [_job_id_param()],
                    "responses": {
                        "200": _json("The job, nothing kept", job_ref),
                        **_errors("401", "404"),
                    },
                },
            },
            "/v1/usage": {
                "get": {
                    "summary": "What this API key used, per UTC day",
                    "description": "Jobs, photos run through the model, inference seconds, "
                    "results by kind, bytes stored and kept; cache hits and re-styles cost "
                    "no photo and no inference. With CUTFX_KEY_ALLOWANCES, the month's "
                    "allowance and what is left of it.",
                    "parameters": [
                        {
                            "name": name,
                            "in": "query",
                            "description": f"First (from) or last (to) day, YYYY-MM-DD; {default}",
                            "schema": {"type": "string", "format": "date"},
                        }
                        for name, default in (
                            ("from", "the month's first by default"),
                            ("to", "today by default"),
                        )
                    ],
                    "responses": {
                        "200": _json("Each day's figures and their total", USAGE_SCHEMA),
                        **_errors("401", "403", "422"),
                    },
                }
            },
            "/v1/jobs/{job_id}/events": {
                "get": {
                    "summary": "The job's events as Server-Sent Events, replayable",
                    "parameters": [
                        _job_id_param(),
                        {"name": "since", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "keepalive_ms",
                            "in": "query",
                            "description": f"Keep-alive comment interval ({keepalive_low} to "
                            f"{keepalive_high} ms)",
                            "schema": {
                                "type": "integer",
                                "minimum": keepalive_low,
                                "maximum": keepalive_high,
                            },
                        },
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "Server-Sent Events",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors("400", "401", "404", "422"),
                    },
                }
            },
            "/v1/effects": {
                "get": {
                    "summary": "The effects and their parameters",
                    "responses": {"200": _json("The registry", {"type": "object"}), **_errors()},
                }
            },
            "/v1/files/{key}": {
                "get": {
                    "summary": "A result, through a signed link (local storage)",
                    "parameters": [
                        {
                            "name": "key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "expires",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "integer"},
                        },
                        {
                            "name": "sig",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {"description": "The file"},
                        **_errors("403", "404"),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json("OpenAPI 3", {"type": "object"}), **_errors()},
                }
            },
            "/v1/webhooks/secret": {
                "get": {
                    "summary": "The secret that signs this API key's webhook deliveries",
                    "responses": {"200": _json("The secret", {"type": "object"}), **_errors("401")},
                }
            },
            "/v1/client-tokens": {
                "post": {
                    "summary": "Trade the secret API key for a short-lived browser token",
                    "description": "The token may submit, read and cancel only the jobs it "
                    "submits, from its one origin, until it expires.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": CLIENT_TOKEN_REQUEST_SCHEMA}},
                    },
                    "responses": {
                        "201": _json("The token", CLIENT_TOKEN_SCHEMA),
                        **_errors("400", "401", "403", "422"),
                    },
                }
            },
            "/v1/client.js": {
                "get": {
                    "summary": "The JavaScript client, an ES module",
                    "security": [],
                    "responses": {"200": {"description": "text/javascript"}},
                }
            },
            "/v1/warmup": {
                "post": {
                    "summary": "Announce a coming upload; reports whether a GPU worker is ready",
                    "responses": {
                        "200": _json("Readiness of the GPU queue", {"type": "object"}),
                        **_errors("401"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of the API and the workers",
                    "security": [{"bearer": []}],
                    "description": "Needs CUTFX_METRICS_TOKEN as a bearer token.",
                    "responses": {
                        "200": {"description": "text/plain; version=0.0.4"},
                        "401": _error(ERROR_DESCRIPTIONS["401"]),
                        "503": _error(ERROR_DESCRIPTIONS["503"]),
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {"200": {"description": "ready"}, "503": _error("Not ready")},
                }
            },
        },
        "security": [{"bearer": []}],
    }


# GET /v1/effects and GET /v1/openapi.json.

blueprint = Blueprint("catalog", __name__, url_prefix="/v1")


@blueprint.get("/effects")
def effects() -> dict[str, Any]:
    return {"effects": [effect.schema() for effect in list_effects()]}


@blueprint.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return openapi_document()
