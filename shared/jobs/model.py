"""What a job is: its request, its results, their states and its events, as stored and sent."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urljoin

from shared.output import PRINT_DPI, OutputFormat, OutputOptions
from shared.settings import CheckThresholds
from shared.storage import Storage

CUTOUT = "cutout"
#: A job's resolutions: at most CUTFX_MAX_SIDE (previews, the web), or the upload's own.
STANDARD, ORIGINAL = "standard", "original"
RESOLUTIONS = (STANDARD, ORIGINAL)
#: Who waits on a job: a person on a page (served first), or a script (what is left).
INTERACTIVE, BATCH = "interactive", "batch"
LANES = (INTERACTIVE, BATCH)
#: The quick cutout a job asks for with preview=true, from the fast model, before the cutout.
PREVIEW = "preview"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Finished, with some results failed.
    PARTIAL = "partial"
    #: Finished because it was canceled (or its deadline passed) before every result was.
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_JOB_STATUSES


FINISHED_JOB_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL, JobStatus.CANCELED}
)


class ResultStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class EventType(StrEnum):
    ACCEPTED = "job.accepted"
    STARTED = "job.started"
    RESULT_SUCCEEDED = "result.succeeded"
    RESULT_FAILED = "result.failed"
    RESULT_CANCELED = "result.canceled"
    FINISHED = "job.finished"


def now() -> float:
    return round(time.time(), 3)


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Owner:
    """Whom a job belongs to: the API key it counts against and, when a client token
    submitted it, that token's id ("" when the key itself did)."""

    key_id: str = ""
    token_id: str = ""

    @property
    def scope(self) -> str:
        """The namespace of this owner's idempotency keys and rate limits."""
        return f"{self.key_id}/{self.token_id}" if self.token_id else self.key_id

    def may_see(self, key_id: str, token_id: str) -> bool:
        """Whether a job submitted by `key_id` (through `token_id`, "" for the key itself)
        is this owner's: the key sees every such job, a client token only its own."""
        if key_id != self.key_id:
            return False
        return not self.token_id or token_id == self.token_id


@dataclass(frozen=True)
class StoredObject:
    """What is known of an object in storage: enough to describe a result without reading it."""

    key: str
    content_type: str
    byte_size: int
    width: int
    height: int
    #: For a stored input: the upload's size before it was scaled down.
    source_width: int | None = None
    source_height: int | None = None
    #: For a stored cutout: its subject's box and coverage (subject_facts), in its pixels.
    subject: dict[str, float] | None = None
    #: For a stored input: the digest of its pixels (plan.pixels_sha256), the same for
    #: every file that decodes to them, whatever its container or metadata.
    pixels_sha256: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """Everything that determines a job's results, fixed at submit."""

    input_sha256: str
    input_key: str
    width: int
    height: int
    effects: tuple[str, ...]
    primary: str | None
    output: OutputFormat
    params: dict[str, dict[str, Any]]
    options: OutputOptions = field(default_factory=OutputOptions)
    #: The upload's size before it was scaled down to CUTFX_MAX_SIDE (0: unknown).
    source_width: int = 0
    source_height: int = 0
    #: A quick `preview` cutout first (from the fast model when the worker runs a slower one).
    preview: bool = False
    #: A cutout that fails the no_subject check fails, instead of only warning.
    strict: bool = False
    #: ORIGINAL: the results at the upload's own size (for print); STANDARD: at most
    #: CUTFX_MAX_SIDE. With ORIGINAL, input_key is the full-size photo the results are
    #: made at, and model_input_key the one at CUTFX_MAX_SIDE the model reads.
    resolution: str = STANDARD
    model_input_key: str = ""
    #: INTERACTIVE or BATCH: which lane its tasks wait in.
    lane: str = INTERACTIVE
    #: The digest of the pixels the cutout is made from (plan.photo_sha256); empty for a
    #: job whose input was stored before inputs had one: then the upload's digest stands in.
    photo_sha256: str = ""

    @property
    def at_original_size(self) -> bool:
        return self.resolution == ORIGINAL

    @property
    def cutout_identity(self) -> str:
        """What names the photo in its cutout's address: its pixels, so that the same
        picture in another file (PNG or TIFF, metadata stripped) reuses the cutout."""
        return self.photo_sha256 or self.input_sha256

    @property
    def dpi(self) -> int:
        """The resolution a result's file says it has: print's, for a full-size job."""
        return PRINT_DPI if self.at_original_size else 0

    @property
    def effect_order(self) -> tuple[str, ...]:
        """The primary effect first, then the others in the order asked for."""
        if self.primary is None:
            return self.effects
        return (self.primary, *(name for name in self.effects if name != self.primary))

    @property
    def result_names(self) -> tuple[str, ...]:
        first = (PREVIEW, CUTOUT) if self.preview else (CUTOUT,)
        return (*first, *self.effect_order)

    def subject_in_upload(self, facts: dict[str, float] | None) -> dict[str, float] | None:
        """A cutout's subject facts (in the processed photo's pixels) in the uploaded photo's
        pixels: the processed photo is the upload, upright, scaled by one factor."""
        if facts is None:
            return None
        long_side = max(self.source_width, self.source_height)
        scale = long_side / max(self.width, self.height) if long_side else 1.0
        shown: dict[str, float] = {
            name: round(facts[name] * scale) for name in ("x", "y", "width", "height")
        }
        shown["coverage"] = facts["coverage"]
        return shown

    def to_json(self) -> str:
        data = asdict(self)
        data["effects"] = list(self.effects)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> JobRequest:
        data = json.loads(raw)
        data["effects"] = tuple(data["effects"])
        data["output"] = OutputFormat(**data["output"])
        data["options"] = OutputOptions.from_dict(data.get("options"))
        return cls(**data)


@dataclass
class ResultRecord:
    """The state of one result (the cutout or one effect) of a job."""

    name: str
    status: ResultStatus = ResultStatus.PENDING
    key: str | None = None
    #: For the cutout: the lossless PNG the effects start from (key is the client's format).
    source_key: str | None = None
    content_type: str | None = None
    byte_size: int | None = None
    width: int | None = None
    height: int | None = None
    cached: bool = False
    attempts: int = 0
    error: dict[str, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: The subject's box in the uploaded photo's pixels, and the share of the frame it covers.
    subject: dict[str, float] | None = None
    #: The checks the cutout failed (cutout_checks): warnings, each with its code.
    checks: list[dict[str, Any]] | None = None
    #: For a cutout run again in base mode (CUTFX_ESCALATE): the mode, which cutout was
    #: kept and why (each one's share of unsure alpha), and what it cost.
    escalation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.status = ResultStatus(self.status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> ResultRecord:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Webhook:
    """Where to POST a job's events, which types, and whose secret signs them."""

    url: str
    events: tuple[EventType, ...]
    key_id: str = ""

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "events": list(self.events), "key_id": self.key_id})

    @classmethod
    def from_json(cls, raw: str) -> Webhook:
        data = json.loads(raw)
        events = tuple(EventType(name) for name in data["events"])
        return cls(data["url"], events, data.get("key_id", ""))


@dataclass
class JobRecord:
    id: str
    status: JobStatus
    created_at: float
    request: JobRequest
    results: dict[str, ResultRecord]
    model_id: str | None = None
    finished_at: float | None = None
    webhook: Webhook | None = None
    #: The id of the API key that submitted the job ("" when keys are off).
    owner: str = ""
    #: The id of the client token that submitted it ("" when the key itself did).
    token_id: str = ""
    #: When unfinished work is canceled (the submit's Cancel-After), if ever.
    cancel_at: float | None = None
    #: The results kept past the TTL (POST /v1/jobs/{id}/keep): name -> their kept copy.
    kept: dict[str, StoredObject] = field(default_factory=dict)

    def owned_by(self, owner: Owner) -> bool:
        return owner.may_see(self.owner, self.token_id)

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def total_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return round(self.finished_at - self.created_at, 3)

    @property
    def first_result_s(self) -> float | None:
        """Submit to the first result that succeeded; None before any has."""
        finished = [
            result.timings["finished_at"]
            for result in self.results.values()
            if result.status == ResultStatus.SUCCEEDED and "finished_at" in result.timings
        ]
        if not finished:
            return None
        return round(min(finished) - self.created_at, 3)


# --- what clients see of a result or an event: small JSON with a fresh signed URL, never bytes


def result_view(
    result: ResultRecord, storage: Storage, url_ttl_s: int, url_base: str = ""
) -> dict[str, Any]:
    """url_base makes relative (local-storage) links absolute; GCS URLs are left as they are."""
    shown: dict[str, Any] = {"status": result.status, "cached": result.cached}
    if result.status == ResultStatus.SUCCEEDED and result.key:
        signed = storage.signed_url(result.key, url_ttl_s)
        shown.update(
            url=urljoin(url_base, signed.url) if url_base else signed.url,
            url_expires_at=signed.expires_at,
            content_type=result.content_type,
            bytes=result.byte_size,
            width=result.width,
            height=result.height,
        )
    for name in ("subject", "checks", "escalation", "error"):
        value = getattr(result, name)
        if value is not None and (value or name != "error"):
            shown[name] = value
    shown["timings"] = result.timings
    return shown


def event_view(
    data: Mapping[str, Any], storage: Storage, url_ttl_s: int, url_base: str = ""
) -> dict[str, Any]:
    """An event's data as sent: a result event's stored record becomes its view, freshly signed."""
    shown = dict(data)
    if "result" in shown:
        record = ResultRecord(**shown["result"])
        shown["result"] = result_view(record, storage, url_ttl_s, url_base)
    return shown


def job_timings(job: JobRecord) -> dict[str, float]:
    timings = {"queued_at": job.created_at}
    if job.finished_at is not None and job.total_s is not None:
        timings["finished_at"] = job.finished_at
        timings["total_s"] = job.total_s
    return timings


def job_view(
    job: JobRecord,
    storage: Storage,
    url_ttl_s: int,
    links: Mapping[str, str],
    url_base: str = "",
    kept_storage: Storage | None = None,
) -> dict[str, Any]:
    """A job as clients see it; `links` are the routes that serve it (the API knows them).
    Kept copies are signed by `kept_storage` (the results' storage unless given)."""
    kept_storage = kept_storage or storage
    shown: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "effects": list(job.request.effect_order),
        "primary": job.request.primary,
        "format": job.request.output.name,
        "quality": job.request.output.quality,
        "input": {
            "width": job.request.width,
            "height": job.request.height,
            "resolution": job.request.resolution,
        },
        "options": job.request.options.shown(),
        "timings": job_timings(job),
        "results": {
            name: result_view(result, storage, url_ttl_s, url_base)
            for name, result in job.results.items()
        },
        "links": dict(links),
    }
    if job.cancel_at is not None:
        shown["cancel_at"] = job.cancel_at
    shown["kept"] = bool(job.kept)
    for name, copy in job.kept.items():
        shown["results"][name]["kept"] = _kept_view(copy, kept_storage, url_ttl_s, url_base)
    return shown


def _kept_view(
    copy: StoredObject, storage: Storage, url_ttl_s: int, url_base: str
) -> dict[str, Any]:
    signed = storage.signed_url(copy.key, url_ttl_s)
    return {
        "url": urljoin(url_base, signed.url) if url_base else signed.url,
        "url_expires_at": signed.expires_at,
        "bytes": copy.byte_size,
    }


# --- checks: when a photo will not make a good cutout -----------------------------------
#
# Judged from the cutout's subject facts (worker/render.py's subject_facts, in the
# processed photo's pixels) and the upload's size. A failed check warns: the result is
# still made, and carries it. Each threshold's default is a named constant of
# shared/settings.py, with why it is what it is, and a setting overrides it
# (CUTFX_CHECK_...).

NO_SUBJECT = "no_subject"
SUBJECT_CUT_OFF = "subject_cut_off"
SEVERAL_SUBJECTS = "several_subjects"
SMALL_SUBJECT = "small_subject"
LOW_CONFIDENCE = "low_confidence"
BLURRY = "blurry"
CHECK_CODES = (NO_SUBJECT, SUBJECT_CUT_OFF, SEVERAL_SUBJECTS, SMALL_SUBJECT, LOW_CONFIDENCE, BLURRY)

EDGES = ("top", "right", "bottom", "left")


def cutout_checks(
    facts: Mapping[str, float] | None, request: JobRequest, limits: CheckThresholds
) -> list[dict[str, Any]]:
    """The checks the cutout fails, each {code, value, threshold, message}; [] when none.
    A measure the facts lack (a cutout cached before it was measured) is not judged."""
    if not facts:
        return []
    failed: list[dict[str, Any]] = []

    def check(code: str, value: float, threshold: float, message: str) -> None:
        failed.append(
            {"code": code, "value": round(value, 4), "threshold": threshold, "message": message}
        )

    coverage = facts["coverage"]
    if coverage < limits.min_coverage:
        check(NO_SUBJECT, coverage, limits.min_coverage, "No subject was found in the photo.")
        return failed
    sides = [side for side in EDGES if facts.get(f"edge_{side}", 0.0) > limits.edge_share]
    if sides:
        share = max(facts[f"edge_{side}"] for side in sides)
        where = ", ".join(sides)
        check(SUBJECT_CUT_OFF, share, limits.edge_share, f"The subject is cut off at the {where}.")
    second = facts.get("second_component", 0.0)
    if second >= limits.second_subject_share:
        message = "There seem to be several subjects; the cutout keeps them all."
        check(SEVERAL_SUBJECTS, second, limits.second_subject_share, message)
    in_upload = request.subject_in_upload(dict(facts)) or {}
    side = max(in_upload.get("width", 0), in_upload.get("height", 0))
    if side < limits.min_subject_px:
        message = "The subject is small in the photo: a print of it will be small or soft."
        check(SMALL_SUBJECT, side, limits.min_subject_px, message)
    if facts.get("uncertain", 0.0) > limits.uncertain_share:
        message = "Parts of the subject could not be told from the background."
        check(LOW_CONFIDENCE, facts["uncertain"], limits.uncertain_share, message)
    if "sharpness" in facts and facts["sharpness"] < limits.min_sharpness:
        message = "The photo looks blurred: a print of it will be soft."
        check(BLURRY, facts["sharpness"], limits.min_sharpness, message)
    return failed


def failed_check(checks: list[dict[str, Any]] | None, code: str) -> dict[str, Any] | None:
    """The check `code` among those a cutout failed, or None when it passed it."""
    return next((item for item in checks or () if item["code"] == code), None)
