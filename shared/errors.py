"""Every named error of cutfx, with its wire code and HTTP status (mapped to responses in
api/errors.py alone). The effects keep a base class of their own, `effects.EffectError`,
which subclasses CutfxError. Errors that never reach a client (a delivery to retry, a
bad configuration) are here too, so there is one place to look."""

from __future__ import annotations

from typing import Any


class CutfxError(Exception):
    """An error a client may see: a stable code, a status and an optional field."""

    code = "internal_error"
    status = 500

    def __init__(
        self, message: str, field: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        #: Sent as Retry-After: when trying again may succeed.
        self.retry_after_s = retry_after_s


class ConfigurationError(CutfxError):
    code = "configuration_error"


class InvalidRedisUrl(ConfigurationError, ValueError):
    """A Redis URL this service cannot use, with the reason (a ValueError, so the settings
    report it against the variable that holds it)."""


class ScriptVocabularyError(ConfigurationError):
    """A Lua script names a state or event that the job model does not define."""


class ChecksumMismatch(ConfigurationError):
    """A downloaded checkpoint is not the file its checksum names."""


class ExportFailed(ConfigurationError):
    """The network could not be exported to ONNX for the exported engines."""


class EngineUnavailable(ConfigurationError):
    """The inference engine asked for (CUTFX_ENGINE) cannot run here: its package, its
    device, its CPU instructions or the network's export is missing (the message says)."""


class MalformedRequest(CutfxError):
    code = "malformed_request"
    status = 400


class Unauthorized(CutfxError):
    code = "unauthorized"
    status = 401


class Forbidden(CutfxError):
    code = "forbidden"
    status = 403


class OriginNotAllowed(Forbidden):
    """A credential sent from a browser origin it is not allowed on."""

    code = "origin_not_allowed"


class QuotaExhausted(Forbidden):
    """A client token has submitted as many jobs as it was issued for."""

    code = "quota_exhausted"


class NotFound(CutfxError):
    code = "not_found"
    status = 404


class JobNotFound(NotFound):
    code = "job_not_found"


class IdempotencyConflict(CutfxError):
    code = "idempotency_conflict"
    status = 409


class JobUnfinished(CutfxError):
    """Keeping a job's results waits until the job has finished."""

    code = "job_unfinished"
    status = 409


class ResultNotReady(CutfxError):
    code = "result_not_ready"
    status = 409


class ResultExpired(CutfxError):
    """The result's file was swept (past CUTFX_RESULT_TTL_S) before it was kept."""

    code = "result_expired"
    status = 410


class PayloadTooLarge(CutfxError):
    code = "payload_too_large"
    status = 413


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class UnsupportedMediaType(CutfxError):
    code = "unsupported_media_type"
    status = 415


class InvalidImage(CutfxError):
    """Bytes that claim to be an image but do not decode."""

    code = "invalid_image"
    status = 400


class InferenceFailed(CutfxError):
    """The network's output for a photo cannot make a mask: it is not finite (NaN or
    infinity), as a reduced precision gives where the checkpoint's values overflow it."""

    code = "inference_failed"


class DeviceFailed(CutfxError):
    """The model's device failed under a forward (a CUDA error): its context is lost for
    the rest of the process, so every photo after it would fail too. Never a photo's
    final error: its task goes back on the queue for another worker."""

    code = "device_failed"


class InvalidParameter(CutfxError):
    code = "invalid_parameter"
    status = 422


class InvalidEventId(InvalidParameter):
    """Not a position in a job's event stream (the API names the parameter it came in)."""


class ImageTooSmall(InvalidParameter):
    """A side shorter than cutfx can find a subject in."""

    code = "image_too_small"


class ImageTooThin(InvalidParameter):
    """An aspect ratio past what cutfx processes (a strip, not a photo)."""

    code = "image_too_thin"


class TooManyActiveJobs(CutfxError):
    """An API key has as many unfinished jobs as it may."""

    code = "too_many_active_jobs"
    status = 429


class AllowanceExhausted(CutfxError):
    """An API key spent its monthly allowance of photos (CUTFX_KEY_ALLOWANCES)."""

    code = "allowance_exhausted"
    status = 429


class TooManyStreams(CutfxError):
    """An API key has as many event streams and long-polls open as it may."""

    code = "too_many_streams"
    status = 429


class RateLimited(CutfxError):
    code = "rate_limited"
    status = 429


class ServiceBusy(CutfxError):
    """This API process is decoding as many uploads as it may at once."""

    code = "busy"
    status = 503


class ServiceNotReady(CutfxError):
    code = "not_ready"
    status = 503


class StorageError(CutfxError):
    code = "storage_error"
    status = 503


class ObjectNotFound(StorageError):
    code = "object_not_found"
    status = 404


class TransientStorageError(StorageError):
    """Worth retrying: a timeout, a reset connection, a 5xx or 429 from the store."""

    code = "storage_unavailable"


class InvalidSignature(CutfxError):
    """A webhook body whose signature header does not sign it (or signed it too long ago)."""

    code = "invalid_signature"
    status = 401


class FetchFailed(CutfxError):
    """A photo URL that gave no photo: no answer, not a 2xx, too many redirects."""

    code = "fetch_failed"
    status = 422


class FetchRefused(FetchFailed):
    """A photo URL (or a redirect's target) that is not a public http(s) address."""

    code = "fetch_refused"


class FetchTimeout(FetchFailed):
    """A photo that did not arrive within CUTFX_FETCH_TIMEOUT_S."""

    code = "fetch_timeout"


class FetchTooLarge(FetchFailed):
    """A photo larger than CUTFX_MAX_UPLOAD_BYTES, cut off as it was read."""

    code = "fetch_too_large"
    status = 413


class BucketNotAllowed(Forbidden):
    """A gs:// photo in a bucket CUTFX_INPUT_BUCKETS does not list."""

    code = "bucket_not_allowed"


class DeliveryRefused(CutfxError):
    """The receiver broke a delivery rule (deadline, answer size) or its address is not public."""

    code = "delivery_refused"


class WebhookDeliveryFailed(CutfxError):
    """The receiver did not take an event; retried with backoff."""

    code = "webhook_delivery_failed"


class DeliveryBusy(CutfxError):
    """Another delivery for the job is running; try again shortly."""

    code = "delivery_busy"


class ApiError(CutfxError):
    """What the cutfx API answered with an error, as its Python client raises it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        super().__init__(f"{status} {error.get('code', 'error')}: {error.get('message', body)}")
        self.status = status
        self.code = error.get("code")
