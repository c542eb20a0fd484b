"""`cutfx demo`: run a local cutfx, push a sample photo through it, save and time the results."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from types import FrameType

from cli import service_settings
from cli.client import CutfxClient, extension_of
from cli.stack import LocalStack, free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO / "samples" / "chelsea.png"
DEFAULT_OUTPUT = Path("demo-output")
DEFAULT_PORT = 8000
#: Signals that end the demo as Ctrl-C does: a closed terminal, `timeout`, a process manager.
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def say(message: str) -> None:
    print(message, flush=True)


def choose_model(cache_dir: Path) -> None:
    """Mode and checkpoint for this machine, unless the settings already name them; a
    generated checkpoint is kept in `cache_dir`."""
    if "CUTFX_MODEL_MODE" not in os.environ:
        import torch

        os.environ["CUTFX_MODEL_MODE"] = "base" if torch.cuda.is_available() else "fast"
        say(f"model mode: {os.environ['CUTFX_MODEL_MODE']} (CUTFX_MODEL_MODE to change)")
    if os.environ.get("CUTFX_MODEL_CKPT"):
        return
    from worker.checkpoint import ensure_random_checkpoint, fetch_release_checkpoint

    mode = os.environ["CUTFX_MODEL_MODE"]
    real = fetch_release_checkpoint(mode)
    if real is not None:
        os.environ["CUTFX_MODEL_CKPT"] = str(real)
        say(f"checkpoint: {real}")
        return
    random_checkpoint = ensure_random_checkpoint(mode, cache_dir)
    os.environ["CUTFX_MODEL_CKPT"] = str(random_checkpoint)
    say(
        "WARNING: the real InSPyReNet checkpoint could not be downloaded (offline?).\n"
        f"         Using a randomly initialised one ({random_checkpoint}):\n"
        "         every step runs for real, but the cutouts' masks are MEANINGLESS.\n"
        "         Put the real file at CUTFX_MODEL_CKPT to get real cutouts."
    )


def choose_environment() -> None:
    """The demo runs on this machine alone: development mode, asked for out loud."""
    if os.environ.setdefault("CUTFX_ENV", "development") == "development":
        say(
            "CUTFX_ENV=development: no API keys and a development signing key, for this "
            "machine only (production refuses to start without them)"
        )
        os.environ.setdefault("CUTFX_WEBHOOK_ALLOW_LOOPBACK", "true")


def stop_the_stack_on_signals() -> None:
    """The signals in STOPPING_SIGNALS end the demo through its `finally`, as Ctrl-C does:
    the workers and the API it starts run in sessions of their own, and a demo that died
    at once would leave them running."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for stopping in STOPPING_SIGNALS:
        signal.signal(stopping, leave)


def run(args: argparse.Namespace) -> int:
    stop_the_stack_on_signals()
    choose_environment()
    # Read once: the demo goes on to set the model and the addresses for the processes it
    # starts, and takes from these settings only what it never sets (cache, batch size).
    settings = service_settings()
    started = time.monotonic()
    choose_model(settings.cache_dir)
    checkpoint_s = time.monotonic() - started
    os.environ.setdefault("CUTFX_LOCAL_STORAGE_DIR", str(Path("var") / "storage"))
    port = free_port(args.port)
    os.environ["CUTFX_BIND"] = f"127.0.0.1:{port}"
    stack = LocalStack(Path("var") / "logs", port, batch_max=settings.batch_max)
    client = CutfxClient(stack.base_url)
    say(f"starting a gpu worker, a cpu worker and the API on {stack.base_url} (logs in var/logs/)")
    stack.start()
    try:
        ready_s = stack.wait_ready(client, on_wait=lambda reason: say(f"  waiting: {reason}"))
        say(f"ready after {ready_s:.1f} s")
        code, job_s = submit_and_save(client, args.image, args.output)
        say(
            f"breakdown: model {checkpoint_s:.1f} s, workers and API ready {ready_s:.1f} s, "
            f"the job {job_s:.1f} s"
        )
        if args.keep_running:
            say(f"the web page is at {stack.base_url}/ — Ctrl-C stops everything")
            wait_for_interrupt()
        return code
    finally:
        client.close()
        stopping = time.monotonic()
        stack.stop()
        say(f"stopped the workers and the API in {time.monotonic() - stopping:.1f} s")


def wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("stopping")


def submit_and_save(client: CutfxClient, image: Path, output: Path) -> tuple[int, float]:
    """Submit `image`, save each result as it is announced; the exit code (1 when a
    result failed) and the seconds from submit to the job's end."""
    started = time.monotonic()
    job = client.submit(image)
    answered_ms = 1000 * (time.monotonic() - started)
    say(f"submitted {image.name}: job {job['id']} answered in {answered_ms:.0f} ms")
    folder = output / job["id"]
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for event in client.events(job["id"]):
        if event.type == "result.succeeded":
            result = event.data["result"]
            path = folder / f"{event.data['name']}.{extension_of(result['content_type'])}"
            path.write_bytes(client.download(result["url"]))
            cached = " (cached)" if result["cached"] else ""
            say(
                f"  {event.data['name']:<19} after {time.monotonic() - started:5.2f} s"
                f"  {result['bytes'] / 1024:7.1f} KB  → {path}{cached}"
            )
        elif event.type == "result.failed":
            failed += 1
            say(f"  {event.data['name']:<19} FAILED: {event.data['result'].get('error')}")
        elif event.type == "job.finished":
            elapsed = time.monotonic() - started
            say(f"job {event.data['status']} in {elapsed:.2f} s; results in {folder}/")
    return (1 if failed else 0), time.monotonic() - started


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="run a local cutfx on a sample photo")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the service up to try the web page"
    )
    parser.set_defaults(handler=run)
