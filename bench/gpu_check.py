"""The GPU path, measured in one run on a CUDA machine: `python -m bench.gpu_check`.

- fp32, fp16 and bf16 autocast at the mode's size (base: 1024²): forward time, and the
  masks and raw saliency (before the sigmoid) against fp32's;
- the exported engines beside eager torch (worker/engines.py): the network exported to
  ONNX and run by ONNX Runtime's CUDA and TensorRT (fp16) execution providers where
  onnxruntime-gpu is installed; each one's parity with torch fp32 as the bake measures
  it (worker/engine_trial.py), and photos per second at batch sizes 1, 4, 8 and 16;
  an engine that cannot run here says why;
- the warm-up: the first `segment` call against the next ones;
- the foreground estimation on the GPU (worker/model.py) against pymatting's:
  agreement where the subject shows, and time;
- torch.compile (inductor) of the network at the reduced precision, and on CUDA with
  CUDA graphs too: each batch size's first call (the compile), photos per second, and
  the logits against the same network eager;
- on CUDA, eager torch captured in a CUDA graph per batch size (no compile), and fp32
  with its matrix products on TF32 tensor cores, each against eager fp32.

Each section's figures are written to `--report` as soon as it ends, so a run stopped at
a time limit still leaves what it measured; a section that fails is reported with its
error, the others still run, and the script then exits 1.

The generated checkpoint unless CUTFX_MODEL_CKPT names another. `--device cpu --mode
fast` runs the same steps on a CPU (to try the script, not to measure a GPU), with the
CPU's engines (ONNX Runtime, OpenVINO) in the GPU's ones' place.
Writes bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import random_checkpoint, write_section
from cli import service_settings
from shared.settings import Settings
from tests.helpers import SAMPLE
from worker.engine_trial import relative_difference
from worker.engines import ENGINES, TF32_MATRIX_PRODUCTS, cpu_flags
from worker.foreground import TorchForeground
from worker.model import LoadedModel, engine_parts, load_model, mask_from_logits

PRECISIONS = ("fp32", "fp16", "bf16")
BATCH_SIZES = (1, 4, 8, 16)
#: torch.compile's modes measured on each device: CUDA graphs ("reduce-overhead") replay
#: a forward's thousands of small kernels as one launch, which matters on a GPU only.
COMPILE_MODES = {"cuda": ("default", "reduce-overhead"), "cpu": ("default",)}
#: The batch sizes the compiled network is measured at: each new one compiles again.
COMPILED_BATCH_SIZES = (1, 8)


def timed(call: Callable[[], Any], rounds: int, device: str) -> float:
    """Median seconds of `call`, the device synchronised around each."""
    samples = []
    for _ in range(rounds):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def model_at(settings: Settings, precision: str) -> LoadedModel:
    """Eager torch at `precision`; on a CPU as the worker runs it there (fp16 as bf16, and
    both as fp32 without bf16 instructions)."""
    name = f"torch-{precision}"
    if settings.device == "cpu":
        name = (
            "torch-fp32" if ENGINES["torch-bf16"].unavailable_because("cpu", cpu_flags()) else name
        )
        name = name.replace("fp16", "bf16")
    return load_model(settings.with_overrides(engine=name))


def precisions(settings: Settings, photo: np.ndarray, rounds: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    reference: tuple[torch.Tensor, np.ndarray] | None = None
    for precision in PRECISIONS:
        model = model_at(settings, precision)
        inputs = [model.prepare(photo)]
        # The forward alone: a whole segment refuses logits that are not finite (fp16's
        # with the generated checkpoint), and those are a figure to report here.
        first = timed(partial(model.saliency, inputs), 1, model.device)
        forward = timed(partial(model.saliency, inputs), rounds, model.device)
        (logits,) = model.saliency(inputs)
        mask = mask_from_logits(logits, photo.shape).astype(np.float64) * 255
        figures = {"first_forward_s": round(first, 3), "forward_ms": round(forward * 1000, 1)}
        if reference is None:
            reference = (logits.cpu(), mask)
        else:
            figures["logit_correlation"] = correlation(reference[0], logits)
            figures["mask_mean_diff_255"] = round(float(np.abs(mask - reference[1]).mean()), 3)
        found[precision] = figures
        del model
        if settings.device == "cuda":
            torch.cuda.empty_cache()
    return found


def photo_inputs(model: LoadedModel, photo: np.ndarray, size: int) -> list[torch.Tensor]:
    """`size` slightly different copies of the photo (shifted sideways), prepared."""
    return [model.prepare(np.roll(photo, 7 * index, axis=1)) for index in range(size)]


def photos_per_s(call: Callable[[], Any], size: int, rounds: int, device: str) -> float:
    """Photos a second of `call`, a forward of `size` photos (the median of `rounds`)."""
    return round(size / timed(call, rounds, device), 2)


def correlation(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    pair = torch.stack([ours.flatten().double().cpu(), theirs.flatten().double().cpu()])
    return round(torch.corrcoef(pair)[0, 1].item(), 6)


def batches(model: LoadedModel, photo: np.ndarray, rounds: int) -> dict[str, float]:
    found = {}
    for size in BATCH_SIZES:
        inputs = photo_inputs(model, photo, size)
        model.saliency(inputs)
        found[str(size)] = photos_per_s(partial(model.saliency, inputs), size, rounds, model.device)
    return found


def engines(settings: Settings, photo: np.ndarray, rounds: int) -> dict[str, Any]:
    """Every engine of this device: parity as the bake measures it, and batch rates."""
    from pathlib import Path

    from worker.bake import prepare_engines
    from worker.engine_choice import read_record

    device = "cuda:0" if settings.device == "cuda" else "cpu"
    # A benchmark reports what it measured now, never an earlier bake's record.
    prepared = prepare_engines(settings, Path(settings.model_ckpt), remeasure=True)
    export = engine_parts(settings, device, Path(settings.model_ckpt)).export
    found: dict[str, Any] = {"export": {k: prepared[k] for k in ("export_s", "export_mb")}}
    trials = {trial.name: trial for trial in read_record(export, device)}
    for name, spec in ENGINES.items():
        reason = spec.unavailable_because(device, cpu_flags())
        if name not in trials:
            found[name] = {"unavailable": reason or "not measured"}
            continue
        trial = trials[name]
        try:
            model = load_model(settings.with_overrides(engine=name))
            rates = batches(model, photo, rounds)
        except Exception as exc:  # a bench reports an engine that fails here, and goes on
            found[name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            continue
        found[name] = {
            "forward_ms": trial.forward_ms,
            "logit_correlation": trial.logit_correlation,
            "logit_relative_difference": trial.logit_relative_difference,
            "mask_mean_diff_255": trial.mask_mean_difference_255,
            "holds_parity": trial.holds_parity,
            "batch_photos_per_s": rates,
        }
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return found


def compiled(settings: Settings, photo: np.ndarray, rounds: int, mode: str) -> dict[str, Any]:
    """torch.compile of the network at the reduced precision against the same network
    eager: the compile (each batch size's first call), photos per second, and logits."""
    from bench.precision import SaliencyOnly, last_saliency

    model = model_at(settings, "fp16")
    single = [model.prepare(photo)]
    (eager,) = (tensor.cpu() for tensor in model.saliency(single))
    model.network = SaliencyOnly(torch.compile(last_saliency(model.network), mode=mode))
    found: dict[str, Any] = {"precision": model.precision, "first_call_s": {}, "photos_per_s": {}}
    for size in COMPILED_BATCH_SIZES:
        inputs = photo_inputs(model, photo, size)
        found["first_call_s"][str(size)] = round(
            timed(partial(model.saliency, inputs), 1, model.device), 1
        )
        found["photos_per_s"][str(size)] = photos_per_s(
            partial(model.saliency, inputs), size, rounds, model.device
        )
    # Copied off at once: a CUDA graph's replay writes its next output where this one lies.
    (logits,) = (tensor.cpu().clone() for tensor in model.saliency(single))
    found["logit_correlation_with_eager"] = correlation(eager, logits)
    return found


def photo_batch(model: LoadedModel, photo: np.ndarray, size: int) -> torch.Tensor:
    """photo_inputs as one batch on the model's device."""
    return torch.stack(photo_inputs(model, photo, size)).to(model.device)


def captured(
    forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor
) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """`forward(batch)` captured in a CUDA graph, after warm-up calls on a side stream
    (as torch's documentation asks); the graph's output tensor is rewritten by each replay."""
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            forward(batch)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = forward(batch)
    return graph, output


def graphed(settings: Settings, photo: np.ndarray, rounds: int) -> dict[str, Any]:
    """Eager torch with each batch size's forward captured once in a CUDA graph and
    replayed: a forward's thousands of kernel launches paid once, with no compile."""
    found: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        model = model_at(settings, precision)
        forward = model.engine.logits
        figures: dict[str, dict[str, float]] = {
            "eager_photos_per_s": {},
            "graph_photos_per_s": {},
            "logit_correlation_with_eager": {},
        }
        for size in COMPILED_BATCH_SIZES:
            batch = photo_batch(model, photo, size)
            eager = forward(batch).cpu()
            figures["eager_photos_per_s"][str(size)] = photos_per_s(
                partial(forward, batch), size, rounds, model.device
            )
            graph, output = captured(forward, batch)
            graph.replay()
            figures["logit_correlation_with_eager"][str(size)] = correlation(eager, output)
            figures["graph_photos_per_s"][str(size)] = photos_per_s(
                graph.replay, size, rounds, model.device
            )
            del graph, output
        found[precision] = figures
        del model
        torch.cuda.empty_cache()
    return found


def tf32(settings: Settings, photo: np.ndarray, rounds: int) -> dict[str, Any]:
    """fp32 with its matrix products on TF32 tensor cores (torch runs the convolutions
    there already by default), side by side with full fp32 on one model: photos per
    second, and the logits against fp32's. The `torch-tf32` engine's parity as the bake
    measures it is in the engines section."""
    model = model_at(settings, "fp32")
    forward = model.engine.logits
    found: dict[str, dict[str, float]] = {
        "fp32_photos_per_s": {},
        "tf32_photos_per_s": {},
        "logit_correlation": {},
        "logit_relative_difference": {},
    }
    for size in COMPILED_BATCH_SIZES:
        batch = photo_batch(model, photo, size)
        full = forward(batch).cpu()
        found["fp32_photos_per_s"][str(size)] = photos_per_s(
            partial(forward, batch), size, rounds, model.device
        )
        with TF32_MATRIX_PRODUCTS:  # as the torch-tf32 engine runs its forwards
            reduced = forward(batch).cpu()
            found["tf32_photos_per_s"][str(size)] = photos_per_s(
                partial(forward, batch), size, rounds, model.device
            )
        found["logit_correlation"][str(size)] = correlation(full, reduced)
        found["logit_relative_difference"][str(size)] = round(relative_difference(reduced, full), 6)
    return found


def foreground(photo: np.ndarray, device: str, rounds: int) -> dict[str, float]:
    from pymatting import estimate_foreground_ml

    rng = np.random.default_rng(0)
    alpha = np.clip(rng.random(photo.shape[:2]) * 1.4 - 0.2, 0, 1)
    image = photo / 255.0
    ours = TorchForeground(device)
    expected = estimate_foreground_ml(image, alpha)
    got = ours(image, alpha)
    weight = alpha[..., None]
    difference = float((np.abs(got - expected) * weight).sum() / (weight.sum() * 3) * 255)
    return {
        "alpha_weighted_diff_255": round(difference, 3),
        "torch_ms": round(timed(lambda: ours(image, alpha), rounds, device) * 1000, 1),
        "pymatting_ms": round(timed(lambda: estimate_foreground_ml(image, alpha), 1, "cpu") * 1000),
    }


def run_sections(
    sections: dict[str, Callable[[], Any]], report: dict[str, Any], path: Path | None
) -> bool:
    """Each section's figures into `report`, written to `path` as each ends; False when
    one failed (its error is its figures)."""
    succeeded = True
    for name, measure in sections.items():
        started = time.perf_counter()
        try:
            report[name] = measure()
        except Exception as exc:  # a bench reports a failed section, and goes on
            report[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            succeeded = False
        took = time.perf_counter() - started
        print(f"gpu_check: {name} took {took:.1f} s", file=sys.stderr, flush=True)
        if path is not None:
            path.write_text(json.dumps(report, indent=2))
    return succeeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--mode", default="base", choices=["base", "fast"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--report", type=Path, help="the JSON report, written as it grows")
    parser.add_argument("--sections", default="", help="only these, comma-separated")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; --device cpu tries the script on the CPU")
    settings = service_settings().with_overrides(device=args.device, model_mode=args.mode)
    if not settings.model_ckpt:
        settings = settings.with_overrides(model_ckpt=str(random_checkpoint(args.mode)))
    sample = Image.open(SAMPLE).convert("RGB")
    photo = np.asarray(sample.resize((1536, 1024), Image.Resampling.LANCZOS))
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
    }

    @cache
    def worker_model() -> LoadedModel:
        """The model as a worker starts it (the engine this machine's record picks)."""
        return load_model(settings)

    def warm_up() -> dict[str, Any]:
        model = worker_model()
        return {
            "engine": model.engine.name,
            "first_segment_s": round(timed(lambda: model.segment(photo), 1, model.device), 3),
            "next_segment_s": round(
                timed(lambda: model.segment(photo), args.rounds, model.device), 3
            ),
        }

    # In the worker's order: the bake (export, engine trials), then a start on its record.
    sections: dict[str, Callable[[], Any]] = {
        "precisions": lambda: precisions(settings, photo, args.rounds),
        "engines": lambda: engines(settings, photo, args.rounds),
        "warm_up": warm_up,
        "batch_photos_per_s": lambda: {
            worker_model().precision: batches(worker_model(), photo, args.rounds)
        },
        "foreground": lambda: foreground(photo, worker_model().device, args.rounds),
    }
    if args.device == "cuda":
        sections["graphed"] = partial(graphed, settings, photo, args.rounds)
        sections["tf32"] = partial(tf32, settings, photo, args.rounds)
    if not args.no_compile:
        for mode in COMPILE_MODES[args.device]:
            sections[f"compiled_{mode}"] = partial(compiled, settings, photo, args.rounds, mode)
    if args.sections:
        chosen = args.sections.split(",")
        unknown = set(chosen) - set(sections)
        if unknown:
            parser.error(f"no section {sorted(unknown)} here: one of {sorted(sections)}")
        sections = {name: sections[name] for name in chosen}
    succeeded = run_sections(sections, report, args.report)
    text = json.dumps(report, indent=2)
    print(text)
    if not args.no_write:
        body = (
            f"`python -m bench.gpu_check --mode {args.mode}` on {report['device']} "
            f"(1536×1024 photo, the generated checkpoint):\n\n```json\n{text}\n```"
        )
        write_section(f"GPU path on {args.device} (bench/gpu_check.py)", body)
    if not succeeded:
        sys.exit(1)


if __name__ == "__main__":
    main()
