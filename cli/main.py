"""`cutfx`: the project's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cli import batch, demo, service_settings
from shared.errors import ConfigurationError
from shared.queues import QUEUE_CPU, QUEUE_GPU, QUEUE_WEBHOOKS

#: The exit status of a command refused for its settings.
EXIT_CONFIGURATION = 2
#: A probe that gets no answer from Redis in this long fails rather than hangs.
PROBE_TIMEOUT_S = 3
#: A worker busy in a solo pool answers between tasks; a ping waits this long for it.
PING_TIMEOUT_S = 10.0


def make_checkpoint(args: argparse.Namespace) -> int:
    from worker.checkpoint import ensure_random_checkpoint

    print(ensure_random_checkpoint(args.mode, service_settings().cache_dir))
    return 0


def bake(args: argparse.Namespace) -> int:
    from worker.bake import CheckpointSource
    from worker.bake import bake as bake_worker

    settings = service_settings()
    source = CheckpointSource(
        args.url,
        args.sha256,
        args.dest,
        args.random,
        engines=not args.no_engines,
        remeasure=args.remeasure,
        measure=not args.export_only,
    )
    print(json.dumps(bake_worker(settings, args.mode or settings.model_mode, source)))
    return 0


def serve(args: argparse.Namespace) -> int:
    from api.server import serve as run_server

    run_server(service_settings(), args.bind, args.workers)
    return 0


def gcs_lifecycle(args: argparse.Namespace) -> int:
    from shared.gcs import GcsStorage, set_lifecycle

    settings = service_settings()
    if settings.storage != "gcs":
        print("set CUTFX_STORAGE=gcs and CUTFX_GCS_BUCKET first", file=sys.stderr)
        return 2
    storage = GcsStorage.from_settings(settings)
    days = set_lifecycle(storage.bucket, settings.gcs_prefix, settings.result_ttl_s)
    where = f"gs://{settings.gcs_bucket}/{settings.gcs_prefix}/"
    print(f"{where}: objects are deleted {days} days after creation")
    return 0


def gcs_cors(args: argparse.Namespace) -> int:
    from shared.gcs import GcsStorage, set_cors

    settings = service_settings()
    if settings.storage != "gcs":
        print("set CUTFX_STORAGE=gcs and CUTFX_GCS_BUCKET first", file=sys.stderr)
        return 2
    origins = sorted(settings.every_origin)
    if not origins:
        print("no origins: set CUTFX_CORS_ORIGINS or CUTFX_KEY_ORIGINS first", file=sys.stderr)
        return 2
    set_cors(GcsStorage.from_settings(settings).bucket, origins)
    print(f"gs://{settings.gcs_bucket}: signed downloads readable from {', '.join(origins)}")
    return 0


def garbage_collect(args: argparse.Namespace) -> int:
    from shared.context import connect_context
    from worker.periodic import collect_garbage

    settings = service_settings()
    deleted = collect_garbage(connect_context(settings, "gc", decode_responses=True))
    if deleted is None:
        print("GCS deletes old objects by its lifecycle rule: run `cutfx gcs-lifecycle`")
        return 0
    print(f"deleted {deleted} objects older than {settings.result_ttl_s} s")
    return 0


def worker_ready(args: argparse.Namespace) -> int:
    """A readiness probe: 0 when a worker on this host (node name `<kind>@<host>`) has a
    live heartbeat that says ready, 1 otherwise."""
    import socket

    from shared.redis_location import redis_client
    from shared.workers import live_workers

    settings = service_settings()
    host = args.host or socket.gethostname()
    client = redis_client(
        settings.job_store_url,
        decode_responses=True,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
    )
    mine = [w for w in live_workers(client) if w.name.rpartition("@")[2] == host]
    if not any(w.ready for w in mine):
        print(f"no ready worker on {host}: {[w.name for w in mine] or 'no heartbeat'}")
        return 1
    print(", ".join(f"{w.name} ready ({','.join(w.queues)})" for w in mine if w.ready))
    return 0


def worker_ping(args: argparse.Namespace) -> int:
    """A liveness probe: 0 when the worker node answers a Celery ping through the broker.

    A producer-only app (the broker settings alone), so the probe imports neither the
    model nor the effects."""
    import socket

    from celery import Celery

    from shared.queues import celery_config

    node = args.node or f"{args.kind}@{socket.gethostname()}"
    app = Celery("cutfx-probe")
    app.conf.update(celery_config(service_settings()))
    replies = app.control.ping(destination=[node], timeout=args.timeout)
    if not any(node in reply for reply in replies):
        print(f"{node} did not answer a ping within {args.timeout} s")
        return 1
    print(f"{node} answered")
    return 0


def key_ids(args: argparse.Namespace) -> int:
    """The non-secret id of each key, for CUTFX_KEY_ORIGINS and the logs."""
    from api.middleware import key_id_of

    keys = [line.strip() for line in sys.stdin] if args.stdin else service_settings().api_keys
    for key in filter(None, keys):
        print(key_id_of(key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutfx", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(subparsers)
    batch.add_parser(subparsers)
    baking = subparsers.add_parser(
        "bake",
        help="put the checkpoint in place, export the network and measure the engines, "
        "warm the model and effects (image build, CI)",
    )
    baking.add_argument("--mode", default="", help="model mode (default: CUTFX_MODEL_MODE)")
    baking.add_argument("--url", default="", help="checkpoint URL (release or mirror)")
    baking.add_argument("--sha256", default="", help="expected sha256 of the checkpoint")
    baking.add_argument("--dest", type=Path, help="where the checkpoint goes")
    baking.add_argument("--random", action="store_true", help="use a generated random checkpoint")
    engine_steps = baking.add_mutually_exclusive_group()
    engine_steps.add_argument(
        "--no-engines",
        action="store_true",
        help="skip the ONNX export and the engine measurement (workers run eager torch)",
    )
    engine_steps.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the engines again even where this machine's record of them is current",
    )
    engine_steps.add_argument(
        "--export-only",
        action="store_true",
        help="export the network but measure no engine (a later bake measures; it can run "
        "beside other work, where timings would not)",
    )
    baking.set_defaults(handler=bake)
    server = subparsers.add_parser(
        "serve", help="run the API (gunicorn with gevent workers) on CUTFX_BIND"
    )
    server.add_argument("--bind", default="", help="address:port (default: CUTFX_BIND)")
    server.add_argument(
        "--workers", type=int, default=0, help="processes (default: CUTFX_API_WORKERS)"
    )
    server.set_defaults(handler=serve)
    checkpoint = subparsers.add_parser(
        "checkpoint",
        help="make (once) a randomly initialised InSPyReNet checkpoint and print its path",
    )
    checkpoint.add_argument("--mode", default="fast", choices=("fast", "base", "base-nightly"))
    checkpoint.set_defaults(handler=make_checkpoint)
    lifecycle = subparsers.add_parser(
        "gcs-lifecycle",
        help="set the bucket rule that deletes objects under CUTFX_GCS_PREFIX after the result TTL",
    )
    lifecycle.set_defaults(handler=gcs_lifecycle)
    cors = subparsers.add_parser(
        "gcs-cors",
        help="let the pages of CUTFX_CORS_ORIGINS and CUTFX_KEY_ORIGINS fetch signed downloads",
    )
    cors.set_defaults(handler=gcs_cors)
    gc = subparsers.add_parser(
        "gc",
        help="delete local-storage objects older than CUTFX_RESULT_TTL_S (workers do it hourly)",
    )
    gc.set_defaults(handler=garbage_collect)
    ready = subparsers.add_parser(
        "worker-ready",
        help="exit 0 when a worker on this host has a live heartbeat that says ready (a probe)",
    )
    ready.add_argument("--host", default="", help="the host part of the node name (default: ours)")
    ready.set_defaults(handler=worker_ready)
    ping = subparsers.add_parser(
        "worker-ping", help="exit 0 when this host's worker answers a ping (a liveness probe)"
    )
    ping.add_argument("--kind", default="gpu", choices=(QUEUE_GPU, QUEUE_CPU, QUEUE_WEBHOOKS))
    ping.add_argument("--node", default="", help="the node name (default: <kind>@<host>)")
    ping.add_argument("--timeout", type=float, default=PING_TIMEOUT_S)
    ping.set_defaults(handler=worker_ping)
    ids = subparsers.add_parser(
        "key-ids", help="print the id of each key in CUTFX_API_KEYS (or of keys read from stdin)"
    )
    ids.add_argument("--stdin", action="store_true", help="read keys from stdin, one a line")
    ids.set_defaults(handler=key_ids)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as exc:
        # A bad or unsafe setting: one line naming it, not a traceback.
        print(f"cutfx {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    return code


if __name__ == "__main__":
    sys.exit(main())
