"""The model's CPU inference at each precision: `python -m bench.precision`.

The generated fast-mode checkpoint (384²), the sample photo; for each variant the
median of N full `segment` calls (the worker's inference stage: transform, forward,
resize, foreground estimation) and of N bare forwards, after one warm-up call.
Variants: fp32; bf16 autocast (what CUTFX_PRECISION gives on a CPU with bf16
instructions); int8 dynamic quantisation of the Linear layers (fp32 otherwise);
torch.compile (inductor) of the bf16 network. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import median_s, random_checkpoint, write_section
from shared.settings import Settings
from tests.helpers import SAMPLE
from worker.engine_choice import cpu_supports_bf16
from worker.model import LoadedModel, load_model

#: What the worker runs, and why (the figures above decide it).
DECISION = (
    "Eager torch's variants only. torch.compile of the bf16 network is faster, but its first "
    "call compiles for minutes, far past a worker's cold start; int8 dynamic quantisation of "
    "the Linear layers and a TorchScript trace are slower than bf16 autocast. None of the "
    "three is kept. Since then the worker runs the exported network where a bake measured it "
    'fastest (OpenVINO bf16 on this kind of CPU, 0.12× of torch fp32): see "Inference '
    'engines" below.'
)


def loaded(precision: str) -> LoadedModel:
    settings = Settings(
        model_mode="fast",
        model_ckpt=str(random_checkpoint("fast")),
        device="cpu",
        precision=precision,  # type: ignore[arg-type]
        engine=f"torch-{precision}",  # type: ignore[arg-type]
    )
    return load_model(settings)


class SaliencyOnly(torch.nn.Module):
    """A traced or compiled saliency function in the network's place."""

    def __init__(self, saliency: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.saliency = saliency

    def forward_inspyre(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        return {"saliency": [self.saliency(x)]}


def last_saliency(network: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: network.forward_inspyre(x)["saliency"][-1]


def quantised() -> LoadedModel:
    model = loaded("fp32")
    # The model keeps precision "fp32": any other value turns autocast on around the
    # quantised layers, which take float32 only.
    model.network = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        model.network, {torch.nn.Linear}, dtype=torch.qint8
    )
    return model


def traced(rgb: np.ndarray) -> LoadedModel:
    model = loaded("fp32")
    # A traced function holds the weights as constants, which may not require grad.
    model.network.requires_grad_(False)
    x = model.prepare(rgb).unsqueeze(0)
    with torch.no_grad():
        function = torch.jit.trace(  # type: ignore[no-untyped-call]
            last_saliency(model.network), x, check_trace=False
        )
    model.network = SaliencyOnly(function)
    return model


def compiled() -> LoadedModel:
    model = loaded("bf16")
    model.network = SaliencyOnly(torch.compile(last_saliency(model.network)))
    return model


def measure(model: LoadedModel, rgb: np.ndarray, runs: int) -> dict[str, float]:
    x = model.prepare(rgb)

    started = time.perf_counter()
    model.segment(rgb)
    first_s = time.perf_counter() - started
    return {
        "first_call_s": round(first_s, 3),
        "segment_s": round(median_s(lambda: model.segment(rgb), runs), 3),
        "forward_s": round(median_s(lambda: model.saliency([x]), runs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    builders: dict[str, Callable[[], LoadedModel]] = {
        "fp32": lambda: loaded("fp32"),
        "bf16 autocast": lambda: loaded("bf16"),
        "int8 dynamic (Linear)": quantised,
        "fp32 TorchScript (trace)": lambda: traced(rgb),
    }
    if not args.no_compile:
        builders["bf16 + torch.compile"] = compiled
    figures: dict[str, dict[str, Any]] = {}
    for name, build in builders.items():
        try:
            figures[name] = measure(build(), rgb, args.runs)
        except Exception as exc:  # a bench reports a variant that cannot run here
            figures[name] = {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
        print(name, json.dumps(figures[name]), flush=True)
    base = figures["fp32"]["segment_s"]
    rows = []
    for name, found in figures.items():
        if "error" in found:
            rows.append(f"| {name} | — | — | — | {found['error']} |")
            continue
        ratio = found["segment_s"] / base
        rows.append(
            f"| {name} | {found['segment_s'] * 1000:.0f} ms | {ratio:.2f}× "
            f"| {found['forward_s'] * 1000:.0f} ms | first call {found['first_call_s']:.1f} s |"
        )
    body = (
        f"`python -m bench.precision --runs {args.runs}` — fast mode (384²), the generated "
        f"checkpoint, the 451×300 sample; CPU bf16 instructions: {cpu_supports_bf16()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.\n\n"
        "| variant | inference stage (segment), median | vs fp32 | bare forward, median | |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + DECISION
    )
    print(body)
    if not args.no_write:
        write_section("Model precision on the CPU (bench/precision.py)", body)


if __name__ == "__main__":
    main()
