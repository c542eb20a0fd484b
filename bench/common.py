"""Helpers the benchmarks share: medians, the machine's description, RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")


#: The CPU flags that decide how fast the model runs here, as /proc/cpuinfo names them.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
#: The kinds of CPU whose figures bench/RESULTS.md keeps apart, by the flag that makes
#: each (the first found names it): a run on one kind does not replace another's.
CPU_KINDS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16 without AMX"))
AVX2_ONLY_KIND = "an AVX2-only CPU"


def cpu_kind(flags: frozenset[str]) -> str:
    """The kind of CPU (CPU_KINDS) that `flags` make."""
    return next((kind for flag, kind in CPU_KINDS if flag in flags), AVX2_ONLY_KIND)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                flags = [flag for flag in SPEED_FLAGS if flag in present]
            if flags and cpu:
                break
    except OSError:
        pass
    shown = f" ({', '.join(flags)})" if flags else ""
    return f"{cpu}{shown}, {os.cpu_count()} cores, Python {platform.python_version()}"


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1000


def p95_ms(seconds: Sequence[float]) -> float:
    return p95(seconds) * 1000


def median_s(call: Callable[[], Any], runs: int) -> float:
    """Median seconds of `runs` calls, after one unmeasured call (lazy initialisation,
    compilation)."""
    call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def publish(section: str, body: str, write: bool) -> None:
    """Print a benchmark's figures and, when asked, record them in bench/RESULTS.md."""
    print(body)
    if write:
        write_section(section, body)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `## name` of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = (
        f"## {name}\n\n_Recorded {date.today().isoformat()} on {machine()}._\n\n{body.strip()}\n"
    )
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")


def random_checkpoint(mode: str = "fast") -> Path:
    """The generated checkpoint of `mode`, in the settings' CUTFX_CACHE_DIR (made once)."""
    from cli import service_settings
    from worker.checkpoint import ensure_random_checkpoint

    return ensure_random_checkpoint(mode, service_settings().cache_dir)


SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "chelsea.png"


def sample_variant(seed: int) -> bytes:
    """The sample photo (PNG) with one pixel changed by `seed`: new to every cache."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(SAMPLE).convert("RGB")).copy()
    pixels[0, 0] = np.random.default_rng(seed).integers(0, 256, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
