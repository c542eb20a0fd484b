"""`cutfx batch INPUT_DIR --out OUTPUT_DIR`: push a folder of photos through a running cutfx.

A bounded number of images is in flight at once. Each image's results land in
OUTPUT_DIR/<image name>/<result>.<ext>, then a `.done` marker; a run that is
stopped and started again skips finished images, and resubmits unfinished
ones with the same Idempotency-Key, so a job the service still has is
followed rather than redone. One JSON line per image goes to the report.
"""

from __future__ import annotations

import argparse
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

    def form(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def fingerprint(self) -> str:
        return json.dumps(self.form(), sort_keys=True)


@dataclass
class Outcome:
    image: str
    status: str
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
    def __init__(self, client: CutfxClient, root: Path, out: Path, options: BatchOptions) -> None:
        self.client = client
        self.root = root
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

    def process(self, path: Path) -> Outcome:
        name = image_name(self.root, path)
        if self.finished_before(name):
            return Outcome(name, "skipped")
        started = time.monotonic()
        data = path.read_bytes()
        try:
            job = self.client.submit(
                path, idempotency_key=idempotency_key(data, self.options), **self.options.form()
            )
        except ApiError as exc:
            return Outcome(name, "rejected", error=str(exc))
        outcome = Outcome(name, "running", job_id=job["id"])
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
    batch: Batch, images: list[Path], concurrency: int, report: Path, stream: TextIO
) -> list[Outcome]:
    progress = Progress(len(images), stream)
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("a") as lines, ThreadPoolExecutor(max_workers=concurrency) as pool:
        for outcome in pool.map(lambda path: _guarded(batch, path), images):
            with lock:
                lines.write(json.dumps(vars(outcome)) + "\n")
                lines.flush()
                outcomes.append(outcome)
            progress.update(outcome)
    return outcomes


def _guarded(batch: Batch, path: Path) -> Outcome:
    try:
        return batch.process(path)
    except Exception as exc:  # one image's trouble must not stop the others; it is reported
        return Outcome(image_name(batch.root, path), "error", error=f"{type(exc).__name__}: {exc}")


def _iter_failed(outcomes: list[Outcome]) -> Iterator[str]:
    for outcome in outcomes:
        if outcome.failed:
            yield f"  {outcome.image}: {outcome.status}" + (
                f" ({outcome.error})" if outcome.error else ""
            )


def run(args: argparse.Namespace) -> int:
    if not args.input.is_dir():
        print(f"not a folder: {args.input}", file=sys.stderr)
        return 2
    images = find_images(args.input)
    if not images:
        print(f"no images under {args.input}", file=sys.stderr)
        return 2
    options = BatchOptions(args.effects, args.primary, args.format, args.quality, args.params)
    client = CutfxClient(args.api_url, args.api_key)
    report = args.report or args.out / "report.jsonl"
    outcomes = run_batch(
        Batch(client, args.input, args.out, options), images, args.concurrency, report, sys.stderr
    )
    failed = list(_iter_failed(outcomes))
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} images done; report: {report}")
    if failed:
        print(f"{len(failed)} failed:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("batch", help="process every image under a folder")
    parser.add_argument("input", type=Path, metavar="INPUT_DIR")
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
    parser.add_argument("--report", type=Path, help="JSON lines (default OUTPUT_DIR/report.jsonl)")
    parser.set_defaults(handler=run)


if __name__ == "__main__":
    from cli.main import main

    sys.exit(main(["batch", *sys.argv[1:]]))
