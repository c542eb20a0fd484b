"""The OpenAPI 3 document of the routes, with the effect parameters from the registry."""

from __future__ import annotations

from typing import Any

from effects import list_effects
from shared.encoding import OUTPUT_FORMATS
from shared.jobs.model import JobStatus, ResultStatus

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
        "results": {
            "type": "object",
            "additionalProperties": {"$ref": "#/components/schemas/Result"},
        },
        "links": {"type": "object"},
        "last_event_id": {"type": "string"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}


WEBHOOK_FORM_FIELDS = {
    "callback_url": {
        "type": "string",
        "format": "uri",
        "description": "Webhook URL for signed events",
    },
    "callback_events": {
        "type": "string",
        "description": "Comma list of event types (default all)",
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _job_id_param() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict[str, Any]:
    effect_names = [effect.name for effect in list_effects()]
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
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        "effects": {
                                            "type": "string",
                                            "description": "Comma list of "
                                            + ", ".join(effect_names)
                                            + "; default all.",
                                        },
                                        "primary": {"type": "string"},
                                        "format": {"type": "string", "enum": list(OUTPUT_FORMATS)},
                                        "quality": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 100,
                                        },
                                        "params": {
                                            "type": "string",
                                            "description": "JSON object keyed by effect name.",
                                        },
                                        **WEBHOOK_FORM_FIELDS,
                                    },
                                }
                            }
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
                                    "links": {"type": "object"},
                                },
                            },
                        ),
                        "400": _error("Malformed request or undecodable image"),
                        "401": _error("Missing or invalid API key"),
                        "413": _error("Upload too large"),
                        "415": _error("Unsupported image format"),
                        "422": _error("Invalid parameter"),
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
                            "description": "Long-poll: hold up to N seconds (max 30) for a change",
                            "schema": {"type": "number", "minimum": 0, "maximum": 30},
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "description": "With wait: the last_event_id already seen",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {"200": _json("The job", job_ref), "404": _error("Unknown job")},
                }
            },
            "/v1/jobs/{job_id}/events": {
                "get": {
                    "summary": "The job's events as Server-Sent Events, replayable",
                    "parameters": [
                        _job_id_param(),
                        {"name": "since", "in": "query", "schema": {"type": "string"}},
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "text/event-stream"},
                        "404": _error("Unknown job"),
                    },
                }
            },
            "/v1/effects": {
                "get": {
                    "summary": "The effects and their parameters",
                    "responses": {"200": _json("The registry", {"type": "object"})},
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
                        "403": _error("Bad or expired link"),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json("OpenAPI 3", {"type": "object"})},
                }
            },
            "/v1/webhooks/secret": {
                "get": {
                    "summary": "The secret that signs this API key's webhook deliveries",
                    "responses": {"200": _json("The secret", {"type": "object"})},
                }
            },
            "/v1/warmup": {
                "post": {
                    "summary": "Announce a coming upload; reports whether a GPU worker is ready",
                    "responses": {"200": _json("Readiness of the GPU queue", {"type": "object"})},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of the API and the workers",
                    "responses": {"200": {"description": "text/plain; version=0.0.4"}},
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
