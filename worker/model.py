"""The InSPyReNet model behind transparent-background: loading, device choice, inference.

The foreground colours of its cutout are worker/foreground.py's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shared.errors import DeviceFailed, InferenceFailed
from shared.settings import Settings
from worker.checkpoint import (
    fetch_release_checkpoint,
    is_random_checkpoint,
    model_id,
    release_checkpoint_path,
)
from worker.foreground import matting_for
from worker.network import build_network, mode_config

if TYPE_CHECKING:
    # The engines import torch, OpenVINO and ONNX Runtime: loaded when a model is, not
    # when this module is (an API process imports it to validate nothing heavy runs).
    from worker.engine_choice import EngineChoice
    from worker.engines import Engine, EngineParts

logger = logging.getLogger(__name__)

#: The mode previews come from (CUTFX_PREVIEW_CKPT): 384², a tenth of base's time on a CPU.
PREVIEW_MODE = "fast"
#: The mode an unsure fast cutout is run again in (CUTFX_ESCALATE).
ESCALATION_MODE = "base"
#: Warm-up photo on the CPU: small, it only pays the ending's first-call costs.
CPU_WARMUP_SHAPE = (64, 64)
#: On CUDA the warm-up runs at a production photo's size, so cudnn's autotuning and
#: every allocation are paid before the first real job.
CUDA_WARMUP_SHAPE = (1536, 2048)
#: transparent-background's normalisation, on 0..255 pixels.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255
#: The network's own guard against a flat map in its min-max stretch.
MIN_MAX_EPSILON = 1e-8


@dataclass
class LoadedModel:
    """The network's engine on its device, and the steps around it, each usable apart so
    a batch can run one forward for many photos: `prepare` and `finish` per photo,
    `saliency` for a batch. `segment` is the three in a row, as
    `Remover.process(type="rgba")`."""

    engine: Engine
    model_id: str
    mode: str
    device: str
    random_weights: bool
    load_seconds: float
    input_size: tuple[int, int]
    matting: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float32]], npt.NDArray[Any]]

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def network(self) -> Any:
        """transparent-background's network, where the engine runs it in torch (None
        where an exported engine runs)."""
        from worker.engines import TorchEngine

        return self.engine.network if isinstance(self.engine, TorchEngine) else None

    @network.setter
    def network(self, network: Any) -> None:
        from worker.engines import TorchEngine

        if not isinstance(self.engine, TorchEngine):
            raise TypeError(f"{self.engine.name} runs the export, not a torch network")
        self.engine.network = network

    def prepare(self, rgb: npt.NDArray[np.uint8]) -> Any:
        """The network's input for one photo: resized to the mode's size, normalised, CHW."""
        return prepared_input(rgb, self.input_size)

    def saliency(self, inputs: Sequence[Any]) -> list[Any]:
        """One forward for same-sized inputs: each one's saliency logits (before the
        sigmoid), 1×h×w float32 on the model's device."""
        import torch

        try:
            logits = self.engine.logits(torch.stack(list(inputs)))
        except Exception as exc:
            from worker.engines import device_lost

            if device_lost(exc):
                raise DeviceFailed(f"{self.engine.name} on {self.device}: {exc}") from exc
            raise
        return list(logits.unbind(0))

    def finish(
        self,
        rgb: npt.NDArray[np.uint8],
        logits: Any,
        full_size: npt.NDArray[np.uint8] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """RGBA at the photo's size from its logits: alpha the predicted mask, colours
        de-matted by the foreground estimation. With `full_size` (the same photo at its own,
        larger size) the cutout is made at that size: the mask upsampled along the full
        photo's own edges (guided_upsample), the colours estimated there."""
        if not all_finite(logits):
            raise InferenceFailed(
                f"{self.engine.name} gave logits that are not finite (NaN or infinity) for"
                " this photo: its precision cannot hold the checkpoint's values here;"
                " CUTFX_ENGINE=torch-fp32 runs the network at full precision"
            )
        if full_size is None:
            photo, mask = rgb, mask_from_logits(logits, rgb.shape[:2])
        else:
            photo, mask = full_size, guided_upsample(stretched_probability(logits), full_size)
        foreground = self.matting(photo / 255.0, mask)
        colour = (255 * np.clip(foreground, 0.0, 1.0) + 0.5).astype(np.uint8)
        alpha = (mask * 255).astype(np.uint8)
        return np.ascontiguousarray(np.dstack([colour[..., :3], alpha]))

    def segment(
        self, rgb: npt.NDArray[np.uint8], full_size: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """RGB in, RGBA cutout out (at `full_size`'s size when given)."""
        (logits,) = self.saliency([self.prepare(rgb)])
        return self.finish(rgb, logits, full_size)

    def warm_up(self) -> float:
        """Pays before real work what would otherwise make the first photo slow.

        On CUDA: a whole cutout at a production photo's size (cudnn's autotuning,
        every allocation). On a CPU only the ending, on a small photo: nothing there is
        compiled at start, and a first forward costs about 0.1 s more than the next,
        while a warm-up forward would keep the worker from its queue for a whole one.
        """
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        if self.device.startswith("cuda"):
            height, width = CUDA_WARMUP_SHAPE
            self.segment(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        else:
            import torch

            height, width = CPU_WARMUP_SHAPE
            photo = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            self.finish(photo, torch.zeros((1, *self.input_size)))
        return time.perf_counter() - started


def prepared_input(rgb: npt.NDArray[np.uint8], size: tuple[int, int]) -> Any:
    """As transparent-background's transform for numpy input: bilinear resize to
    `size` (height, width), ImageNet normalisation, channels first."""
    import cv2
    import torch

    height, width = size
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    normalised = (resized.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def all_finite(logits: Any) -> bool:
    """No NaN or infinity among the logits: what a reduced precision gives where the
    checkpoint's values overflow it."""
    import torch

    return bool(torch.isfinite(logits).all())


def _stretched(logits: Any) -> Any:
    """The network's own ending (sigmoid, then stretched to 0..1), per photo. The network
    stretches over its whole batch; per photo, a batched photo gets the mask it would get
    alone."""
    import torch

    probability = torch.sigmoid(logits)
    low, high = probability.min(), probability.max()
    return (probability - low) / (high - low + MIN_MAX_EPSILON)


def mask_from_logits(logits: Any, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """The stretched mask resized to the photo, as `Remover` does."""
    from torch.nn.functional import interpolate

    stretched = _stretched(logits)
    resized = interpolate(stretched[None], tuple(shape[:2]), mode="bilinear", align_corners=True)
    mask: npt.NDArray[np.float32] = resized[0, 0].cpu().numpy()
    return mask


def stretched_probability(logits: Any) -> npt.NDArray[np.float32]:
    """The stretched mask at the network's own size, for the guided upsample."""
    low: npt.NDArray[np.float32] = _stretched(logits)[0].float().cpu().numpy()
    return low


#: The guided filter's window at the mask's own size: 2·r+1 pixels a side (at 384² and a
#: 6000-pixel photo, about 80 of the photo's pixels), and its regularisation (the guide in
#: 0..1): below about a 3 % step of grey a window is taken as flat, and follows the mask.
GUIDED_RADIUS = 2
GUIDED_EPSILON = 1e-3


def guided_upsample(
    mask: npt.NDArray[np.float32],
    photo: npt.NDArray[np.uint8],
    radius: int = GUIDED_RADIUS,
    epsilon: float = GUIDED_EPSILON,
) -> npt.NDArray[np.float32]:
    """`mask` (0..1, any size) at `photo`'s size, its edges moved onto the photo's own:
    a guided filter (He, Sun and Tang) fitted at the mask's size against the photo's
    grey, its linear coefficients upsampled and applied to the full-size grey (the fast
    guided filter's joint upsampling). A plain bilinear upsample leaves the edge where
    the low-resolution mask put it, blurred over the scale factor."""
    import cv2

    height, width = mask.shape
    grey: Any = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    guide = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
    window = (2 * radius + 1, 2 * radius + 1)

    def mean(pixels: Any) -> Any:
        return cv2.boxFilter(pixels, -1, window, borderType=cv2.BORDER_REFLECT)

    mean_guide, mean_mask = mean(guide), mean(mask)
    covariance = mean(guide * mask) - mean_guide * mean_mask
    variance = mean(guide * guide) - mean_guide * mean_guide
    slope = covariance / (variance + epsilon)
    offset = mean_mask - slope * mean_guide
    full = (photo.shape[1], photo.shape[0])
    slope_full = cv2.resize(mean(slope), full, interpolation=cv2.INTER_LINEAR)
    offset_full = cv2.resize(mean(offset), full, interpolation=cv2.INTER_LINEAR)
    upsampled: npt.NDArray[np.float32] = np.clip(slope_full * grey + offset_full, 0.0, 1.0)
    return upsampled


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUTFX_DEVICE=cuda but no CUDA device is available")
    return "cuda:0" if setting == "cuda" else "cpu"


def resolve_checkpoint(settings: Settings) -> Path:
    """CUTFX_MODEL_CKPT, or transparent-background's release checkpoint for the mode
    (downloaded and md5-checked on first use)."""
    if settings.model_ckpt:
        checkpoint = Path(settings.model_ckpt)
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"CUTFX_MODEL_CKPT points at {checkpoint}, which does not exist"
            )
        return checkpoint
    release = fetch_release_checkpoint(settings.model_mode)
    if release is None:
        raise FileNotFoundError(
            f"no checkpoint: the {settings.model_mode} release checkpoint could not be "
            f"downloaded to {release_checkpoint_path(settings.model_mode)}; set CUTFX_MODEL_CKPT"
        )
    return release


def load_model(settings: Settings) -> LoadedModel:
    from worker.engine_choice import choose_engine
    from worker.engines import build_engine
    from worker.memory import keep_freed_memory

    keep_freed_memory()  # also where a model is loaded outside a worker: benches, tests
    started = time.perf_counter()
    device = resolve_device(settings.device)
    checkpoint = resolve_checkpoint(settings)
    identity = model_id(settings.model_mode, checkpoint)
    parts = engine_parts(settings, device, checkpoint)
    choice = choose_engine(settings, device, parts.export)
    _export_when_forced(choice, parts, settings.model_mode, checkpoint)
    engine = build_engine(choice.name, parts)
    if choice.by_rule and device.startswith("cuda") and engine.precision != "fp32":
        choice, engine = fp32_unless_finite(choice, engine, parts)
    loaded = LoadedModel(
        engine=engine,
        model_id=identity,
        mode=settings.model_mode,
        device=device,
        random_weights=is_random_checkpoint(checkpoint),
        load_seconds=time.perf_counter() - started,
        input_size=parts.input_size,
        matting=matting_for(device),
    )
    logger.info(
        "model loaded",
        extra={
            "model_id": loaded.model_id,
            "device": device,
            "engine": choice.name,
            "precision": loaded.precision,
            "engine_reason": choice.reason,
            "mode": settings.model_mode,
            "seconds": round(loaded.load_seconds, 2),
        },
    )
    if loaded.random_weights:
        logger.warning(
            "the checkpoint is randomly initialised: cutouts will be meaningless masks",
            extra={"checkpoint": str(checkpoint)},
        )
    return loaded


def network_on(device: str, mode: str, checkpoint: Path) -> Any:
    """transparent-background's network with the checkpoint's weights on `device`."""
    import torch

    network = build_network(mode, checkpoint).to(device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    # PyTorch's default layout on every device, not the channels_last cuDNN prefers: the
    # network's attention layers `view` their convolutions' outputs, which a channels_last
    # tensor refuses (tests/worker/test_model.py).
    return network


def engine_parts(settings: Settings, device: str, checkpoint: Path) -> EngineParts:
    """What this model's engines are built from (worker/engines.py), on `device`, with
    the process's thread count."""
    import torch

    from worker.engines import EngineParts
    from worker.export import exported_network

    height, width = mode_config(settings.model_mode)["base_size"]
    return EngineParts(
        device=device,
        threads=int(torch.get_num_threads()),
        input_size=(int(height), int(width)),
        network=lambda: network_on(device, settings.model_mode, checkpoint),
        export=exported_network(settings.cache_dir, model_id(settings.model_mode, checkpoint)),
    )


def fp32_unless_finite(
    choice: EngineChoice, engine: Engine, parts: EngineParts
) -> tuple[EngineChoice, Engine]:
    """A reduced precision no bake has measured here, tried on one of the bake's photos:
    where the checkpoint's values overflow it, torch fp32 runs instead. On an H200 the
    generated checkpoint's logits (about 1e10, past fp16's 65504) came out NaN in fp16,
    every cutout a meaningless mask; a bake would have measured that and chosen fp32."""
    from worker.engine_choice import EngineChoice
    from worker.engine_trial import REFERENCE_ENGINE, trial_photos
    from worker.engines import build_engine

    photo = prepared_input(trial_photos()[0], parts.input_size)
    if all_finite(engine.logits(photo[None])):
        return choice, engine
    reason = (
        f"{choice.name} gave logits that are not finite with this checkpoint (its values"
        f" overflow {engine.precision}): fp32 until a bake on this device measures"
    )
    logger.warning("reduced precision overflows", extra={"engine": choice.name})
    del engine
    return EngineChoice(REFERENCE_ENGINE, reason), build_engine(REFERENCE_ENGINE, parts)


def _export_when_forced(
    choice: EngineChoice, parts: EngineParts, mode: str, checkpoint: Path
) -> None:
    """An exported engine forced by CUTFX_ENGINE before any bake: export now (about a
    minute on two cores), once; `auto` never waits for this."""
    from worker.engines import engine_spec

    if engine_spec(choice.name).exported and not parts.export.exists():
        logger.warning(
            "exporting the network for the engine asked for; `cutfx bake` does this ahead",
            extra={"engine": choice.name, "path": str(parts.export.onnx)},
        )
        export_missing(parts, mode, checkpoint)


def export_missing(parts: EngineParts, mode: str, checkpoint: Path) -> float:
    """The network exported (from a CPU copy, whatever the engines' device) where
    `parts` expect it, unless it is there; seconds taken."""
    from worker.export import ensure_exported

    return ensure_exported(parts.export, parts.input_size, lambda: build_network(mode, checkpoint))
