"""Which engine a worker runs, and why (logged at every start).

1. CUTFX_ENGINE, when it names one.
2. Else the fastest engine that held parity when `cutfx bake` measured them all on this
   machine (worker/engine_trial.py), read from the record the bake left beside the
   export. A record is per machine: the CPU's model, its flags and the thread count (or
   the GPU's name), so an image baked on one machine does not decide for another.
3. Else the same, from a bake on this CPU at another thread count (the nearest): a worker
   given its share of the cores (OMP_NUM_THREADS) is rarely baked at that share. On the
   CPUs measured at one thread and at two the order held or tied (bench/RESULTS.md),
   where the rules below were wrong on one of them; a tie can part (on an AVX2-only EPYC
   ONNX Runtime and OpenVINO tied at one thread, and ONNX Runtime was 10 % faster at
   two), which a bake at the worker's own thread count settles.
4. Else rules from the CPU's flags: where the export exists, OpenVINO (bf16 on a CPU with
   AMX, fp32 otherwise), the fastest on every CPU measured before an AMD EPYC with
   AVX512-BF16; where it does not, eager torch, as before there were exports. On CUDA, torch at
   CUTFX_PRECISION until a bake on that GPU has measured the exported engines.

Whatever the route, only engines at a precision CUTFX_PRECISION allows on the device
are candidates: fp32 always, and bf16 or fp16 where the setting asks for it and the
device has it (effective_precision); on CUDA, TF32 wherever a reduced precision is
allowed.

On CUDA the bake times each engine on a batch of the worker's size (CUTFX_BATCH_MAX, 8 by
default), a photo's share of it: on an H200 every engine took 47 to 66 ms for one photo
alone, the GPU waiting on kernel launches, while in batches of 8 fp16 and bf16 ran twice
as fast as fp32 (bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from shared.settings import Settings
from worker.engines import (
    CPU_BF16_FLAGS,
    CPUINFO,
    ENGINES,
    cpu_flags,
    cpuinfo_field,
    engine_spec,
)
from worker.export import ExportedNetwork

#: Parity with torch fp32 that an engine must hold to be chosen: at fp32 the raw
#: logits correlate to 0.9999, differ by a thousandth of their magnitude on average, and
#: no mask pixel moves more than 1/255; at a reduced precision (bf16, fp16) the logits
#: correlate to 0.999 and differ by 5 % at most, and the masks by 1/255 on average
#: (tests/worker/test_precision.py holds torch's bf16 to 0.99 and 2/255). Correlation
#: alone is not enough: random-weight maps of different photos correlate to 0.9999.
MIN_LOGIT_CORRELATION = {"fp32": 0.9999, "reduced": 0.999}
MAX_LOGIT_RELATIVE_DIFFERENCE = {"fp32": 1e-3, "reduced": 0.05}
MAX_MASK_DIFFERENCE_255 = {"fp32": 1.0, "reduced": 1.0}
RECORD_PREFIX = "measured-"
#: Bump when what a bake measures changes (its photos, its runs, the figures it keeps):
#: older records are then measured again rather than kept.
RECORD_FORMAT = 1
#: The CPU engines in the order the rules prefer them.
CPU_RULE_ORDER = ("openvino-bf16", "openvino-fp32", "onnxruntime-fp32", "torch-bf16", "torch-fp32")


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str
    #: Chosen by the rules, with no measurement of this machine behind it.
    by_rule: bool = False


@dataclass(frozen=True)
class EngineTrial:
    """One engine measured against torch fp32 on the same photos. `forward_ms` is a
    photo's share of a forward of `batch_size` photos: the batch the worker forwards."""

    name: str
    precision: str
    forward_ms: float
    logit_correlation: float
    logit_relative_difference: float
    mask_max_difference_255: float
    mask_mean_difference_255: float
    batch_size: int = 1

    @property
    def holds_parity(self) -> bool:
        tier = "fp32" if self.precision == "fp32" else "reduced"
        # At fp32 every pixel is held to the bound; at a reduced precision the mean is.
        difference = (
            self.mask_max_difference_255 if tier == "fp32" else self.mask_mean_difference_255
        )
        return (
            self.logit_correlation >= MIN_LOGIT_CORRELATION[tier]
            and self.logit_relative_difference <= MAX_LOGIT_RELATIVE_DIFFERENCE[tier]
            and difference <= MAX_MASK_DIFFERENCE_255[tier]
        )


def cpu_supports_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), which oneDNN uses."""
    has_onednn = bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]
    return has_onednn and bool(set(CPU_BF16_FLAGS) & cpu_flags(cpuinfo))


def effective_precision(device: str, setting: str, bf16_on_cpu: bool) -> str:
    """CUTFX_PRECISION on this device: as set on CUDA; on a CPU, bf16 where the CPU has
    bf16 instructions (fp16 there would be emulated, so it means bf16 too), else fp32."""
    if device.startswith("cuda") or setting == "fp32":
        return setting
    return "bf16" if bf16_on_cpu else "fp32"


def _digest(described: str) -> str:
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _cpu_described() -> str:
    return f"{cpuinfo_field('model name')}|{' '.join(sorted(cpu_flags()))}"


def machine_signature(device: str) -> str:
    """What makes engine timings comparable: the CPU (model, flags, threads) or the GPU."""
    if device.startswith("cuda"):
        return _digest(torch.cuda.get_device_name(int(device.partition(":")[2] or 0)))
    return _digest(f"{_cpu_described()}|{torch.get_num_threads()}")


def cpu_signature() -> str:
    """This CPU (model and flags) whatever the thread count."""
    return _digest(_cpu_described())


def record_path(export: ExportedNetwork, device: str) -> Path:
    return export.directory / f"{RECORD_PREFIX}{machine_signature(device)}.json"


def engine_versions() -> dict[str, str]:
    """The installed distributions of the packages the engines run on, with their
    versions: timings measured under others no longer hold."""
    distributions = importlib.metadata.packages_distributions()
    return {
        name: importlib.metadata.version(name)
        for package in sorted({spec.package for spec in ENGINES.values()})
        for name in sorted(distributions.get(package, []))
    }


def write_record(export: ExportedNetwork, device: str, trials: list[EngineTrial]) -> Path:
    """Keep the bake's measurements beside the export, for this machine's workers."""
    path = record_path(export, device)
    # Where no exported engine runs, the bake exports nothing and the record starts the folder.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    stored: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "versions": engine_versions(),
        "trials": [asdict(trial) for trial in trials],
    }
    if not device.startswith("cuda"):
        stored |= {"cpu": cpu_signature(), "threads": torch.get_num_threads()}
    partial.write_text(json.dumps(stored, indent=2))
    os.replace(partial, path)
    return path


def _load(path: Path) -> dict[str, Any]:
    try:
        stored: dict[str, Any] = json.loads(path.read_text())
        stored["trials"] = [EngineTrial(**trial) for trial in stored["trials"]]
        return stored
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_record(export: ExportedNetwork, device: str) -> list[EngineTrial]:
    """The bake's measurements on this machine; none when it measured none here."""
    trials: list[EngineTrial] = _load(record_path(export, device)).get("trials", [])
    return trials


def current_record(export: ExportedNetwork, device: str, batch_size: int = 1) -> list[EngineTrial]:
    """This machine's record if a bake may keep it rather than measure again: written in
    this format under the engine packages installed now, at the batch the worker
    forwards. Empty otherwise."""
    stored = _load(record_path(export, device))
    if stored.get("format") != RECORD_FORMAT or stored.get("versions") != engine_versions():
        return []
    trials: list[EngineTrial] = stored.get("trials", [])
    if any(trial.batch_size != batch_size for trial in trials):
        return []
    return trials


def read_nearest_thread_count(export: ExportedNetwork) -> tuple[int, list[EngineTrial]]:
    """A bake's measurements on this CPU at the thread count nearest this process's, and
    that count; (0, []) when this CPU was never measured."""
    threads = torch.get_num_threads()
    this_cpu = cpu_signature()
    loaded = [_load(path) for path in sorted(export.directory.glob(f"{RECORD_PREFIX}*.json"))]
    records = [record for record in loaded if record.get("cpu") == this_cpu and record["trials"]]
    if not records:
        return 0, []
    nearest = min(records, key=lambda record: (abs(record["threads"] - threads), record["threads"]))
    return nearest["threads"], nearest["trials"]


def allowed_precisions(device: str, setting: str) -> set[str]:
    """fp32 and the setting's precision on this device; on CUDA, where the setting allows
    a reduced precision, TF32 too: fp32's range with fewer mantissa bits than either."""
    if device.startswith("cuda"):
        return {"fp32", setting} | ({"tf32"} if setting != "fp32" else set())
    return {"fp32", effective_precision(device, setting, cpu_supports_bf16())}


def can_run(name: str, device: str, export: ExportedNetwork) -> bool:
    spec = engine_spec(name)
    if spec.unavailable_because(device, cpu_flags()) is not None:
        return False
    return export.exists() or not spec.exported


def fastest_measured(
    trials: list[EngineTrial], candidates: set[str], where: str = "on this machine"
) -> EngineChoice | None:
    held = sorted(
        (trial for trial in trials if trial.name in candidates and trial.holds_parity),
        key=lambda trial: trial.forward_ms,
    )
    if not held:
        return None
    best = held[0]
    others = ", ".join(f"{trial.name} {trial.forward_ms:.0f} ms" for trial in held[1:])
    batched = f" a photo in batches of {best.batch_size}" if best.batch_size > 1 else ""
    return EngineChoice(
        best.name,
        f"the fastest that held parity when baked {where}: {best.forward_ms:.0f} ms{batched}"
        + (f" (then {others})" if others else ""),
    )


def by_rule(device: str, precision: str, candidates: set[str], has_export: bool) -> EngineChoice:
    if device.startswith("cuda"):
        name = f"torch-{precision}"
        return EngineChoice(name, "CUDA: not measured on this GPU yet", by_rule=True)
    for name in CPU_RULE_ORDER:
        if name in candidates:
            break
    if not has_export:
        reason = "no export of this network yet (`cutfx bake` makes it): eager torch"
    elif name.startswith("openvino"):
        reason = (
            "not measured on this machine; OpenVINO was the fastest or as fast as any at"
            " its precision on every CPU measured"
        )
    else:
        reason = "not measured on this machine; OpenVINO is not installed"
    return EngineChoice(name, reason + f", at {ENGINES[name].precision} on this CPU", by_rule=True)


def choose_engine(settings: Settings, device: str, export: ExportedNetwork) -> EngineChoice:
    """The engine this worker runs, and the reason (see the module's doc)."""
    if settings.engine != "auto":
        return EngineChoice(settings.engine, f"CUTFX_ENGINE={settings.engine}")
    allowed = allowed_precisions(device, settings.precision)
    candidates = {
        name
        for name, spec in ENGINES.items()
        if spec.precision in allowed and can_run(name, device, export)
    }
    measured = fastest_measured(read_record(export, device), candidates)
    if measured is None and not device.startswith("cuda"):
        threads, trials = read_nearest_thread_count(export)
        where = f"on this CPU at {threads} threads (this worker runs {torch.get_num_threads()})"
        measured = fastest_measured(trials, candidates, where)
    if measured is not None:
        return measured
    precision = effective_precision(device, settings.precision, "bf16" in allowed)
    return by_rule(device, precision, candidates, export.exists())
