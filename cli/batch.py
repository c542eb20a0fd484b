"""`cutfx batch INPUT --out OUTPUT_DIR`: push many photos through a running cutfx.

INPUT is a folder of photos, a list of photo addresses (a text file with one URL a line,
or a CSV file with a `url` column and optionally a `name` one), or a gs://bucket/prefix
whose photos the service reads itself (the bucket in its CUTFX_INPUT_BUCKETS). Addresses
are sent as image_url: the service fetches them, nothing is downloaded here.

A bounded number of images is in flight at once. Each image's results land in
OUTPUT_DIR/<image name>/<result>.<ext>, then a `.done` marker; a run that is
stopped and started again skips finished images, and resubmits unfinished
ones with the same Idempotency-Key, so a job the service still has is
followed rather than redone. One JSON line per image goes to the report, naming its
source (the file or the address).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cli.client import CutfxClient, extension_of
from shared.errors import ApiError
from shared.jobs.model import BATCH, LANES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DONE_MARKER = ".done"
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_CONCURRENCY = 4
PROGRESS_WIDTH = 28


@dataclass(frozen=True)
class BatchOptions:
    effects: str | None = None
    primary: str | None = None
    format: str | None = None
    quality: str | None = None
    params: str | None = None
    #: A folder is a script's work: it waits in the batch lane, behind people on pages.
    lane: str = BATCH

    def form(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def fingerprint(self) -> str:
        """What decides the results (the lane does not: a resumed run may change it)."""
        return json.dumps({k: v for k, v in self.form().items() if k != "lane"}, sort_keys=True)


@dataclass(frozen=True)
class Source:
    """One photo of a batch: a file of the folder, or an address the service fetches."""

    #: Its results' folder under OUTPUT_DIR.
    name: str
    path: Path | None = None
    url: str | None = None

    @property
    def photo(self) -> Path | str:
        """What the client submits: the file, or the address."""
        if self.url is not None:
            return self.url
        if self.path is None:
            raise ValueError(f"{self.name} has neither a file nor an address")
        return self.path

    @property
    def shown(self) -> str:
        return str(self.photo)

    def identity(self) -> bytes:
        """What its Idempotency-Key is made from: the file's bytes, or its address."""
        photo = self.photo
        return photo.read_bytes() if isinstance(photo, Path) else photo.encode()


@dataclass
class Outcome:
    image: str
    status: str
    source: str = ""
    job_id: str | None = None
    files: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status not in ("succeeded", "skipped")


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_name(root: Path, path: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def folder_sources(root: Path) -> list[Source]:
    return [Source(image_name(root, path), path=path) for path in find_images(root)]


def address_name(url: str) -> str:
    """A folder name for an address: its last path part, and a short digest of the whole
    address so that two photos named alike never share a folder."""
    last = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    stem = Path(last).stem or "photo"
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def list_sources(listing: Path) -> list[Source]:
    """The addresses of a text file (one a line; blank lines and # comments skipped) or of
    a CSV file (a `url` or `image_url` column, and an optional `name` one)."""
    text = listing.read_text()
    if listing.suffix.lower() != ".csv":
        urls = [line.strip() for line in text.splitlines()]
        return [Source(address_name(u), url=u) for u in urls if u and not u.startswith("#")]
    sources = []
    for row in csv.DictReader(text.splitlines()):
        url = (row.get("url") or row.get("image_url") or "").strip()
        if url:
            name = (row.get("name") or "").strip() or address_name(url)
            sources.append(Source(name, url=url))
    return sources


def bucket_sources(prefix_url: str) -> list[Source]:
    """The photos under gs://bucket/prefix, listed with this machine's Google credentials;
    the service reads each itself."""
    from google.cloud import storage

    bucket, _, prefix = prefix_url.removeprefix("gs://").partition("/")
    client = storage.Client()
    names = sorted(
        blob.name
        for blob in client.list_blobs(bucket, prefix=prefix)
        if Path(blob.name).suffix.lower() in IMAGE_SUFFIXES
    )
    return [
        Source(
            Path(name[len(prefix) :].lstrip("/")).with_suffix("").as_posix(),
            url=f"gs://{bucket}/{name}",
        )
        for name in names
    ]


def find_sources(given: str) -> list[Source]:
    """INPUT as the user gave it: a folder, a list of addresses, or a gs:// prefix."""
    if given.startswith("gs://"):
        return bucket_sources(given)
    path = Path(given)
    if path.is_dir():
        return folder_sources(path)
    if path.is_file():
        return list_sources(path)
    raise FileNotFoundError(f"not a folder, a list of addresses or a gs:// prefix: {given}")


def idempotency_key(data: bytes, options: BatchOptions) -> str:
    digest = hashlib.sha256(data)
    digest.update(options.fingerprint().encode())
    return "batch-" + digest.hexdigest()


class Progress:
    """Counts, rate and ETA on one line (a line per image when not on a terminal)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.tty = stream.isatty()

    def update(self, outcome: Outcome) -> None:
        with self.lock:
            self.done += 1
            self.failed += outcome.failed
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate else 0.0
            filled = round(PROGRESS_WIDTH * self.done / max(self.total, 1))
            bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
            line = (
                f"[{bar}] {self.done}/{self.total} ({self.failed} failed) "
                f"{rate:.2f} img/s ETA {eta:4.0f} s  {outcome.image}: {outcome.status}"
            )
            if self.tty:
                self.stream.write("\r\x1b[2K" + line)
                if self.done == self.total:
                    self.stream.write("\n")
            else:
                self.stream.write(line + "\n")
            self.stream.flush()


class Batch:
    def __init__(self, client: CutfxClient, out: Path, options: BatchOptions) -> None:
        self.client = client
        self.out = out
        self.options = options

    def folder(self, name: str) -> Path:
        return self.out / name

    def finished_before(self, name: str) -> bool:
        marker = self.folder(name) / DONE_MARKER
        if not marker.is_file():
            return False
        try:
            return bool(json.loads(marker.read_text())["options"] == self.options.fingerprint())
        except (ValueError, KeyError):
            return False

    def process(self, source: Source) -> Outcome:
        name = source.name
        if self.finished_before(name):
            return Outcome(name, "skipped", source.shown)
        started = time.monotonic()
        key = idempotency_key(source.identity(), self.options)
        try:
            job = self.client.submit(source.photo, idempotency_key=key, **self.options.form())
        except ApiError as exc:
            return Outcome(name, "rejected", source.shown, error=str(exc))
        outcome = Outcome(name, "running", source.shown, job_id=job["id"])
        outcome.timings["accepted_s"] = round(time.monotonic() - started, 3)
        for event in self.client.events(job["id"]):
            if event.type == "result.succeeded":
                outcome.files.append(self.save(name, event.data["name"], event.data["result"]))
                outcome.timings.setdefault("first_result_s", round(time.monotonic() - started, 3))
            elif event.type == "result.failed":
                error = event.data["result"].get("error") or {}
                outcome.error = f"{event.data['name']}: {error.get('message', 'failed')}"
            elif event.type == "job.finished":
                outcome.status = event.data["status"]
        outcome.timings["total_s"] = round(time.monotonic() - started, 3)
        if outcome.status == "succeeded":
            marker = {"job_id": job["id"], "options": self.options.fingerprint()}
            (self.folder(name) / DONE_MARKER).write_text(json.dumps(marker))
        return outcome

    def save(self, name: str, result: str, shown: dict[str, Any]) -> str:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{result}.{extension_of(shown['content_type'])}"
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(self.client.download(shown["url"]))
        os.replace(partial, target)
        return str(target.relative_to(self.out))


def run_batch(
    batch: Batch, sources: list[Source], concurrency: int, report: Path, stream: TextIO
) -> list[Outcome]:
    progress = Progress(len(sources), stream)
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("a") as lines, ThreadPoolExecutor(max_workers=concurrency) as pool:
        for outcome in pool.map(lambda source: _guarded(batch, source), sources):
            with lock:
                lines.write(json.dumps(vars(outcome)) + "\n")
                lines.flush()
                outcomes.append(outcome)
            progress.update(outcome)
    return outcomes


def _guarded(batch: Batch, source: Source) -> Outcome:
    try:
        return batch.process(source)
    except Exception as exc:  # one image's trouble must not stop the others; it is reported
        error = f"{type(exc).__name__}: {exc}"
        return Outcome(source.name, "error", source.shown, error=error)


def _iter_failed(outcomes: list[Outcome]) -> Iterator[str]:
    for outcome in outcomes:
        if outcome.failed:
            yield f"  {outcome.image}: {outcome.status}" + (
                f" ({outcome.error})" if outcome.error else ""
            )


def run(args: argparse.Namespace) -> int:
    try:
        sources = find_sources(args.input)
    except ImportError:
        print("a gs:// prefix needs Google's client: pip install 'cutfx[gcs]'", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not sources:
        print(f"no images in {args.input}", file=sys.stderr)
        return 2
    options = BatchOptions(
        args.effects, args.primary, args.format, args.quality, args.params, lane=args.lane
    )
    client = CutfxClient(args.api_url, args.api_key)
    report = args.report or args.out / "report.jsonl"
    outcomes = run_batch(
        Batch(client, args.out, options), sources, args.concurrency, report, sys.stderr
    )
    failed = list(_iter_failed(outcomes))
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} images done; report: {report}")
    if failed:
        print(f"{len(failed)} failed:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "batch", help="process every photo of a folder, a list of URLs or a gs:// prefix"
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        help="a folder, a text or CSV file of photo URLs, or gs://bucket/prefix",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="OUTPUT_DIR")
    parser.add_argument("--api-url", default=os.environ.get("CUTFX_API_URL", DEFAULT_API_URL))
    parser.add_argument("--api-key", default=os.environ.get("CUTFX_API_KEY"))
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="images in flight"
    )
    parser.add_argument("--effects", help="comma list (default: all)")
    parser.add_argument("--primary", help="the effect to run first")
    parser.add_argument("--format", choices=("webp", "png", "jpeg"))
    parser.add_argument("--quality")
    parser.add_argument("--params", help='JSON keyed by effect, e.g. \'{"popart": {"levels": 4}}\'')
    parser.add_argument(
        "--lane",
        choices=LANES,
        default=BATCH,
        help="batch (default): after photos people wait on; interactive: with them",
    )
    parser.add_argument("--report", type=Path, help="JSON lines (default OUTPUT_DIR/report.jsonl)")
    parser.set_defaults(handler=run)


if __name__ == "__main__":
    from cli.main import main

    sys.exit(main(["batch", *sys.argv[1:]]))
