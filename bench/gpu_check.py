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
  agreement where the subject shows, and time.

The generated checkpoint unless CUTFX_MODEL_CKPT names another. `--device cpu --mode
fast` runs the same steps on a CPU (to try the script, not to measure a GPU), with the
CPU's engines (ONNX Runtime, OpenVINO) in the GPU's ones' place.
Writes bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import random_checkpoint, write_section
from cli import service_settings
from shared.settings import Settings
from tests.helpers import SAMPLE
from worker.engines import ENGINES, cpu_flags
from worker.foreground import TorchForeground
from worker.model import LoadedModel, engine_parts, load_model

PRECISIONS = ("fp32", "fp16", "bf16")
BATCH_SIZES = (1, 4, 8, 16)


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
        first = timed(partial(model.segment, photo), 1, model.device)
        inputs = [model.prepare(photo)]
        forward = timed(partial(model.saliency, inputs), rounds, model.device)
        (logits,) = model.saliency(inputs)
        mask = model.finish(photo, logits)[..., 3].astype(np.float64)
        figures = {"first_call_s": round(first, 3), "forward_ms": round(forward * 1000, 1)}
        if reference is None:
            reference = (logits.flatten().cpu(), mask)
        else:
            pair = torch.stack([reference[0], logits.flatten().cpu()])
            figures["logit_correlation"] = round(torch.corrcoef(pair)[0, 1].item(), 6)
            figures["mask_mean_diff_255"] = round(float(np.abs(mask - reference[1]).mean()), 3)
        found[precision] = figures
        del model
        if settings.device == "cuda":
            torch.cuda.empty_cache()
    return found


def batches(model: LoadedModel, photo: np.ndarray, rounds: int) -> dict[str, float]:
    found = {}
    for size in BATCH_SIZES:
        inputs = [model.prepare(np.roll(photo, 7 * index, axis=1)) for index in range(size)]
        model.saliency(inputs)
        seconds = timed(partial(model.saliency, inputs), rounds, model.device)
        found[str(size)] = round(size / seconds, 2)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--mode", default="base", choices=["base", "fast"])
    parser.add_argument("--rounds", type=int, default=10)
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
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    }
    report["precisions"] = precisions(settings, photo, args.rounds)
    report["engines"] = engines(settings, photo, args.rounds)
    model = load_model(settings)
    report["warm_up"] = {
        "first_segment_s": round(timed(lambda: model.segment(photo), 1, model.device), 3),
        "next_segment_s": round(timed(lambda: model.segment(photo), args.rounds, model.device), 3),
    }
    report["batch_photos_per_s"] = {model.precision: batches(model, photo, args.rounds)}
    report["foreground"] = foreground(photo, model.device, args.rounds)
    text = json.dumps(report, indent=2)
    print(text)
    if not args.no_write:
        body = (
            f"`python -m bench.gpu_check --mode {args.mode}` on {report['device']} "
            f"(1536×1024 photo, the generated checkpoint):\n\n```json\n{text}\n```"
        )
        write_section(f"GPU path on {args.device} (bench/gpu_check.py)", body)


if __name__ == "__main__":
    main()
