"""The network's forward at the machine's limit: `python -m bench.engine`.

- **The floor:** this machine's attainable rate, a 4096² matmul in fp32 (and bf16 where
  the CPU has bf16 instructions) on the worker's thread count, and the forward's FLOPs
  (torch's FlopCounterMode): the floor is FLOPs ÷ rate.
- **The export:** seconds, disk size and peak memory of exporting the network to ONNX
  (worker/export.py), in a fresh cache.
- **Every engine** this machine runs (worker/engines.py), each in a process of its own
  as a worker loads it: the median forward of one photo, its ratio to the floor at its
  precision, its parity with torch fp32 (worker/engine_trial.py), the resident memory
  with the model loaded and after a cutout, and which one the worker picks here.
- **Through the service:** the inference stage of real jobs (a local stack, distinct
  photos) with CUTFX_ENGINE=torch-fp32 and with the worker's own choice.

`--cap-isa AVX2` runs it all with oneDNN and MKL held to AVX2 (ONEDNN_MAX_CPU_ISA,
MKL_ENABLE_INSTRUCTIONS), an estimate of an AVX2-only machine on a newer one; ONNX
Runtime's own kernels do not honour the cap. Writes bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import cpu_kind, median_s, random_checkpoint, write_section
from bench.runs import local_stack, photo_variants, run_job, scratch, stage_seconds
from shared.settings import Settings
from worker.engine_choice import EngineTrial, allowed_precisions, choose_engine
from worker.engine_trial import measure_engines, trial_photos
from worker.engines import ENGINES, cpu_flags
from worker.model import engine_parts, export_missing, load_model

MATMUL_SIDE = 4096
ISA_ENVIRONMENT = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def matmul_rate(dtype: torch.dtype, runs: int = 5) -> float:
    """GFLOP/s of a large square matmul on this process's threads."""
    left = torch.randn(MATMUL_SIDE, MATMUL_SIDE, dtype=dtype)
    right = torch.randn(MATMUL_SIDE, MATMUL_SIDE, dtype=dtype)
    seconds = median_s(lambda: left @ right, runs)
    return 2 * MATMUL_SIDE**3 / seconds / 1e9


def forward_gflop(settings: Settings) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = load_model(settings.with_overrides(engine="torch-fp32"))
    height, width = model.input_size
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.engine.logits(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() / 1e9


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """This process's high-water resident size (VmHWM: getrusage's maxrss would carry the
    parent's over a fork)."""
    return _status_mb("VmHWM")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _export_child(settings: Settings, cache_dir: str, results: Any) -> None:
    fresh = settings.with_overrides(cache_dir=Path(cache_dir))
    parts = engine_parts(fresh, "cpu", Path(fresh.model_ckpt))
    seconds = export_missing(parts, fresh.model_mode, Path(fresh.model_ckpt))
    results.put({"export_s": seconds, "mb": parts.export.size_bytes() / 2**20, **_rss()})


def _engine_child(settings: Settings, name: str, runs: int, results: Any) -> None:
    started = time.perf_counter()
    model = load_model(settings.with_overrides(engine=name))
    load_s = time.perf_counter() - started
    loaded_mb = current_rss_mb()
    batch = torch.stack([model.prepare(photo) for photo in trial_photos()[:1]])
    forward_s = median_s(lambda: model.engine.logits(batch), runs)
    model.segment(trial_photos()[0])
    results.put({"load_s": load_s, "forward_s": forward_s, "loaded_mb": loaded_mb, **_rss()})


def _rss() -> dict[str, float]:
    return {"rss_mb": current_rss_mb(), "peak_mb": peak_rss_mb()}


def in_child(target: Any, *args: Any) -> dict[str, Any]:
    """`target(*args, queue)` in a fresh process (its memory its own); what it put."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=target, args=(*args, results))
    child.start()
    found: dict[str, Any] = results.get()
    child.join()
    return found


def service_inference_ms(engine: str, jobs: int) -> dict[str, Any]:
    """The median inference stage of `jobs` distinct photos through a local stack."""
    workdir = scratch()
    settings = {"CUTFX_ENGINE": engine}
    with local_stack(workdir, settings=settings) as (_, client):
        runs = [run_job(client, photo) for photo in photo_variants(jobs + 1, workdir)]
    seconds = [value for run in runs[1:] for value in stage_seconds(run.job).get("inference", [])]
    return {"inference_ms": statistics.median(seconds) * 1000, "samples": len(seconds)}


def floors(gflop: float, precisions: set[str]) -> dict[str, dict[str, float]]:
    rates = {"fp32": matmul_rate(torch.float32)}
    if "bf16" in precisions:
        rates["bf16"] = matmul_rate(torch.bfloat16)
    return {
        precision: {"gflops": rate, "floor_ms": gflop / rate * 1000}
        for precision, rate in rates.items()
    }


def engine_rows(
    trials: list[EngineTrial], timings: dict[str, dict[str, Any]], floor: dict[str, Any]
) -> list[str]:
    rows = []
    for trial in trials:
        timing = timings[trial.name]
        at = floor.get(trial.precision) or floor["fp32"]
        forward_ms = timing["forward_s"] * 1000
        rows.append(
            f"| {trial.name} | {forward_ms:.0f} ms | {forward_ms / at['floor_ms']:.2f}× "
            f"| {trial.logit_correlation:.5f} | {trial.logit_relative_difference:.1e} "
            f"| {trial.mask_max_difference_255:.0f} / {trial.mask_mean_difference_255:.4f} "
            f"| {'yes' if trial.holds_parity else 'no'} | {timing['loaded_mb']:.0f} MB "
            f"| {timing['peak_mb']:.0f} MB | {timing['load_s']:.1f} s |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", default="fast", choices=["fast", "base"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--service-jobs", type=int, default=5, help="0: skip the service")
    parser.add_argument("--cap-isa", default="", help="e.g. AVX2: hold oneDNN and MKL to it")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.cap_isa and os.environ.get(ISA_ENVIRONMENT[0]) != args.cap_isa:
        # The caps are read when the libraries load: set them, then start again.
        os.environ.update(dict.fromkeys(ISA_ENVIRONMENT, args.cap_isa))
        os.execv(sys.executable, [sys.executable, "-m", "bench.engine", *sys.argv[1:]])
    checkpoint = random_checkpoint(args.mode)
    settings = Settings(model_mode=args.mode, model_ckpt=str(checkpoint), device="cpu")
    if args.cap_isa:
        settings = settings.with_overrides(precision="fp32")
    gflop = forward_gflop(settings)
    allowed = allowed_precisions("cpu", settings.precision)
    floor = floors(gflop, allowed)
    exported = in_child(_export_child, settings, str(scratch()))
    parts = engine_parts(settings, "cpu", checkpoint)
    if not parts.export.exists():
        from worker.bake import prepare_engines

        prepare_engines(settings, checkpoint)
    names = [name for name, spec in ENGINES.items() if spec.precision in allowed]
    trials = measure_engines(parts, trial_photos(), names)
    timings = {
        trial.name: in_child(_engine_child, settings, trial.name, args.runs) for trial in trials
    }
    chosen = choose_engine(settings, "cpu", parts.export)
    report: dict[str, Any] = {
        "gflop": gflop,
        "floor": floor,
        "export": exported,
        "chosen": vars(chosen),
    }
    if args.service_jobs:
        os.environ.update({"CUTFX_PRECISION": settings.precision})
        report["service"] = {
            engine: service_inference_ms(engine, args.service_jobs)
            for engine in ("torch-fp32", chosen.name)
        }
    print(json.dumps({**report, "timings": timings}, indent=2, default=str))
    body = render(args, report, trials, timings)
    print(body)
    if not args.no_write:
        kind = f"oneDNN and MKL held to {args.cap_isa}" if args.cap_isa else cpu_kind(cpu_flags())
        write_section(f"Inference engines, {args.mode} mode, {kind} (bench/engine.py)", body)


def render(
    args: argparse.Namespace,
    report: dict[str, Any],
    trials: list[EngineTrial],
    timings: dict[str, dict[str, Any]],
) -> str:
    floor = report["floor"]
    rates = ", ".join(
        f"{precision} {values['gflops']:.0f} GFLOP/s (floor {values['floor_ms']:.0f} ms)"
        for precision, values in floor.items()
    )
    exported = report["export"]
    lines = [
        f"`python -m bench.engine --mode {args.mode}"
        + (f" --cap-isa {args.cap_isa}" if args.cap_isa else "")
        + f"`: {torch.get_num_threads()} threads; one forward is {report['gflop']:.1f} GFLOP; "
        f"matmul {MATMUL_SIDE}²: {rates}.",
        "",
        f"Export: {exported['export_s']:.0f} s, {exported['mb']:.0f} MB on disk, "
        f"peak {exported['peak_mb'] / 1024:.1f} GiB resident.",
        "",
        "| engine | forward (1 photo) | ÷ floor | logit corr. | rel. diff. | mask max / mean "
        "(/255) | parity | RSS loaded | peak RSS | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *engine_rows(trials, timings, floor),
        "",
        f"The worker here picks **{report['chosen']['name']}**: {report['chosen']['reason']}.",
    ]
    if "service" in report:
        service = report["service"]
        base = service["torch-fp32"]["inference_ms"]
        picked = service[report["chosen"]["name"]]["inference_ms"]
        lines += [
            "",
            f"Through the service (inference stage, median of {args.service_jobs} jobs): "
            f"torch-fp32 {base:.0f} ms, {report['chosen']['name']} {picked:.0f} ms: "
            f"**{picked / base:.2f}×**.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
