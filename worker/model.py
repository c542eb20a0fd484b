"""The InSPyReNet model behind transparent-background: loading, device choice, inference."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.settings import Settings
from worker.checkpoint import is_random_checkpoint, model_id, release_checkpoint_path
from worker.foreground import TorchForeground

logger = logging.getLogger(__name__)

#: Warm-up input on the CPU: small, it only has to trigger the lazy compilation.
CPU_WARMUP_SHAPE = (64, 64)
#: On CUDA the warm-up runs at a production photo's size, so cudnn's autotuning and
#: every allocation are paid before the first real job.
CUDA_WARMUP_SHAPE = (1536, 2048)
#: /proc/cpuinfo flags of the instructions that make bf16 matrix work fast on a CPU.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass
class LoadedModel:
    remover: Any
    model_id: str
    mode: str
    device: str
    precision: str
    random_weights: bool
    load_seconds: float

    def segment(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """RGB in, RGBA cutout out (alpha = the predicted mask, colours de-matted)."""
        rgba = self.remover.process(rgb, type="rgba")
        return np.ascontiguousarray(rgba, dtype=np.uint8)

    def warm_up(self) -> float:
        """One inference on a dummy image, so lazy compilation is paid before real work."""
        height, width = CUDA_WARMUP_SHAPE if self.device.startswith("cuda") else CPU_WARMUP_SHAPE
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        self.segment(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        return time.perf_counter() - started


@contextlib.contextmanager
def mmap_checkpoint_loads() -> Iterator[None]:
    """Make transparent-background's torch.load map the checkpoint instead of reading it.

    Remover loads its state dict with a plain torch.load; mapping the ~370 MB file
    lets the page cache serve it (shared between worker processes) and skips a copy.
    """
    import torch

    original = torch.load

    def load_mapped(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("mmap", True)
        return original(*args, **kwargs)

    torch.load = load_mapped
    try:
        yield
    finally:
        torch.load = original


def cpu_supports_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), which oneDNN uses."""
    import torch

    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    has_onednn = bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]
    return has_onednn and any(flag in flags for flag in CPU_BF16_FLAGS)


def effective_precision(device: str, setting: str, bf16_on_cpu: bool) -> str:
    """CUTFX_PRECISION on this device: as set on CUDA; on a CPU, bf16 where the CPU has
    bf16 instructions (fp16 there would be emulated, so it means bf16 too), else fp32."""
    if device.startswith("cuda") or setting == "fp32":
        return setting
    return "bf16" if bf16_on_cpu else "fp32"


def with_precision(model: Any, device: str, precision: str) -> Any:
    """The network, run under autocast at `precision`, answering in float32 (so the
    package's post-processing, numpy included, sees the dtype it expects)."""
    import torch

    if precision == "fp32":
        return model
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    class Autocast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                return self.inner(*args, **kwargs).float()

    return Autocast().eval()


def _cpu_precision_reason(setting: str, bf16_on_cpu: bool) -> dict[str, str]:
    if setting == "fp32":
        return {"precision": "fp32", "reason": "CUTFX_PRECISION=fp32"}
    if bf16_on_cpu:
        return {"precision": "bf16", "reason": "the CPU has bf16 instructions (autocast)"}
    return {"precision": "fp32", "reason": "no bf16 instructions on this CPU"}


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUTFX_DEVICE=cuda but no CUDA device is available")
    return "cuda:0" if setting == "cuda" else "cpu"


def load_model(settings: Settings) -> LoadedModel:
    import torch
    from transparent_background import Remover

    started = time.perf_counter()
    device = resolve_device(settings.device)
    checkpoint = Path(settings.model_ckpt) if settings.model_ckpt else None
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"CUTFX_MODEL_CKPT points at {checkpoint}, which does not exist")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    # With ckpt=None transparent-background downloads its release checkpoint.
    with mmap_checkpoint_loads():
        remover = Remover(
            mode=settings.model_mode, device=device, ckpt=str(checkpoint) if checkpoint else None
        )
    if device.startswith("cuda"):
        remover.model = remover.model.to(memory_format=torch.channels_last)
        # pymatting's foreground estimation would run on the CPU (numba): on a GPU worker
        # it was most of a job; the torch port runs it on the GPU.
        remover.matting_fn = TorchForeground(device)
    resolved = checkpoint or release_checkpoint_path(settings.model_mode)
    random_weights = is_random_checkpoint(resolved)
    bf16_on_cpu = not device.startswith("cuda") and cpu_supports_bf16()
    precision = effective_precision(device, settings.precision, bf16_on_cpu)
    remover.model = with_precision(remover.model, device, precision)
    if not device.startswith("cuda"):
        logger.info("cpu precision", extra=_cpu_precision_reason(settings.precision, bf16_on_cpu))
    loaded = LoadedModel(
        remover=remover,
        model_id=model_id(settings.model_mode, resolved),
        mode=settings.model_mode,
        device=device,
        precision=precision,
        random_weights=random_weights,
        load_seconds=time.perf_counter() - started,
    )
    logger.info(
        "model loaded",
        extra={
            "model_id": loaded.model_id,
            "device": device,
            "precision": precision,
            "mode": settings.model_mode,
            "seconds": round(loaded.load_seconds, 2),
        },
    )
    if random_weights:
        logger.warning(
            "the checkpoint is randomly initialised: cutouts will be meaningless masks",
            extra={"checkpoint": str(resolved)},
        )
    return loaded
