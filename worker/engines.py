"""The inference engines: what runs one forward of the network, by name (CUTFX_ENGINE).

Every engine takes the same input (a batch of prepared photos, N×3×H×W float32 on the
CPU) and returns the same output (the last saliency map before the sigmoid, N×1×H×W
float32 on the model's device), so everything around the forward (batching, previews,
escalation, print resolution) is the same whichever runs.

- `torch-*`: transparent-background's network in eager PyTorch, at a precision by
  autocast (bf16 on a CPU with bf16 instructions; fp16 or bf16 on CUDA), the weights
  autocast would cast stored at that precision once; on CUDA also `torch-tf32`, fp32
  with its matrix products on the tensor cores' TF32 (torch runs its convolutions there
  already).
- `onnxruntime-*` and `openvino-*`: the network's ONNX export (worker/export.py), run by
  ONNX Runtime or OpenVINO. Both fuse the graph and pick kernels for the CPU they run on;
  OpenVINO's bf16 runs the matrix work on AMX, and is offered only where AMX is.

Which one a worker runs is worker/engine_choice.py's decision.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from shared.errors import EngineUnavailable
from shared.settings import EngineName
from worker.export import INPUT_NAME, ExportedNetwork, SaliencyLogits

#: /proc/cpuinfo flags of the instructions that make bf16 matrix work fast on a CPU.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: OpenVINO's bf16 is offered only where AMX runs its matrix work: on an AMD EPYC with
#: AVX512-BF16 and no AMX it lost parity with torch fp32 (logits 4 to 13 % off, where
#: torch's own bf16 stayed within 2 %; bench/RESULTS.md), as it held on AMX.
OPENVINO_BF16_FLAGS = ("amx_bf16",)
#: ONNX Runtime's session setting that lets idle intra-op threads spin.
ORT_ALLOW_SPINNING = "session.intra_op.allow_spinning"
#: OpenVINO's names for the precisions.
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}
#: Where OpenVINO keeps its compiled networks, inside the export's folder: a restart
#: loads them instead of compiling again.
OPENVINO_CACHE = "openvino-cache"
TENSORRT_CACHE = "tensorrt-cache"
#: The batch sizes TensorRT builds its one engine for (an optimisation profile): a shape
#: outside it would make TensorRT build another, minutes into a job.
TENSORRT_MAX_BATCH = 16
TENSORRT_OPTIMAL_BATCH = 8
#: How ONNX Runtime reports a CUDA library's error, inside whatever exception its Python
#: binding raises ("... CUDA failure 700: an illegal memory access was encountered ;
#: GPU=0 ; ..."): its exceptions carry no error code of their own, and TensorRT's engine
#: reports the CUDA calls it makes the same way.
CUDA_LIBRARY_FAILURE = re.compile(r"\b(?:CUDA|CUDNN|CUBLAS) failure \d+")
#: An allocation that failed leaves the device usable, as torch's OutOfMemoryError does:
#: that photo fails, the worker goes on.
ALLOCATION_FAILURE = re.compile(r"out of memory|ALLOC_FAILED", re.IGNORECASE)


class Engine(Protocol):
    """One forward: prepared photos in, raw saliency logits out (see the module's doc)."""

    name: str
    precision: str

    def logits(self, batch: torch.Tensor) -> torch.Tensor: ...


@dataclass
class EngineParts:
    """What an engine is built from. `network` builds transparent-background's network
    on `device` (only the torch engines call it); `export` is the network's ONNX export."""

    device: str
    threads: int
    input_size: tuple[int, int]
    network: Callable[[], Any]
    export: ExportedNetwork


class Tf32MatrixProducts:
    """fp32 matrix products on CUDA's TF32 while any forward of a `torch-tf32` engine runs.

    torch's switch (`torch.backends.cuda.matmul.allow_tf32`) is the process's, not a
    module's: it is turned on by the first forward to start and back to what it was by
    the last to end, so forwards side by side (a threads pool's models) never turn it off
    under one another. Only the TF32 engine runs in a worker process; a bake measures the
    engines one after another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._before = False

    def __enter__(self) -> None:
        with self._lock:
            if self._running == 0:
                self._before = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = True
            self._running += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                torch.backends.cuda.matmul.allow_tf32 = self._before


TF32_MATRIX_PRODUCTS = Tf32MatrixProducts()


#: The layers whose weights autocast casts to the reduced precision on every forward.
AUTOCAST_CAST_LAYERS = (torch.nn.Linear, torch.nn.Conv2d)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def store_weights_as_autocast_casts_them(network: torch.nn.Module, precision: str) -> None:
    """The Linear and convolution layers' weights stored at the dtype autocast gives them
    on every forward: the same logits bit for bit, without those casts (a bf16 forward
    on an AMD EPYC with AVX512-BF16: 821 against 918 ms, bench/RESULTS.md). Norms and
    the rest keep their precision, as autocast keeps it."""
    dtype = AUTOCAST_DTYPES[precision]
    for module in network.modules():
        if isinstance(module, AUTOCAST_CAST_LAYERS):
            module.to(dtype)


class TorchEngine:
    """The network in eager PyTorch, at `precision` by autocast."""

    def __init__(self, name: str, precision: str, parts: EngineParts) -> None:
        self.name = name
        self.precision = precision
        self.device = parts.device
        #: What autocast runs the matrix work at; None at fp32, where it stays off.
        self.autocast_dtype = AUTOCAST_DTYPES.get(precision)
        network = parts.network()
        if self.autocast_dtype is not None:
            store_weights_as_autocast_casts_them(network, precision)
        self._saliency = SaliencyLogits(network)

    @property
    def network(self) -> Any:
        return self._saliency.network

    @network.setter
    def network(self, network: Any) -> None:
        """Another module in the network's place (bench/precision.py: traced, compiled)."""
        self._saliency = SaliencyLogits(network)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        # No cast cache: the weights autocast would cast are stored cast already, so it
        # would hold nothing, and without it a forward can be captured in a CUDA graph.
        return torch.autocast(device_type, dtype=self.autocast_dtype, cache_enabled=False)

    def _matrix_products(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "tf32":
            return TF32_MATRIX_PRODUCTS
        return contextlib.nullcontext()

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        with torch.no_grad(), self._autocast(), self._matrix_products():
            logits: torch.Tensor = self._saliency(batch)
        return logits.float()


class OnnxRuntimeEngine:
    """The export in ONNX Runtime, on the providers given (CPU, CUDA, TensorRT)."""

    def __init__(self, name: str, precision: str, parts: EngineParts, providers: list[Any]) -> None:
        import onnxruntime

        self.name = name
        self.precision = precision
        self.device = parts.device
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = parts.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # The worker shares the CPU (effects, the API, other workers), and ONNX Runtime's
        # threads spin between operators by default: two workers on two threads each took
        # 3.1 s a forward spinning, 2.7 s not; alone, 1.27 to 1.37 s against 1.39 to
        # 1.44 s (bench/RESULTS.md).
        options.add_session_config_entry(ORT_ALLOW_SPINNING, "0")
        self.session = onnxruntime.InferenceSession(
            str(parts.export.onnx), options, providers=providers
        )

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        (output,) = self.session.run(None, {INPUT_NAME: batch.numpy()})
        return torch.from_numpy(output).to(self.device)


@dataclass
class OpenVinoEngine:
    """The export in OpenVINO on the CPU. A network is compiled per batch size (static
    shapes run 5 to 20 % faster than the dynamic axis), the first on load, others when
    first met; compiled networks are cached on disk beside the export."""

    name: str
    precision: str
    parts: EngineParts
    _compiled: dict[int, Any] = field(default_factory=dict)
    #: Idle infer requests per batch size: a request holds its buffers, so one reused
    #: saves their allocation (about 5 % of a bf16 forward).
    _idle: dict[int, queue.SimpleQueue[Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        import openvino

        self.device = self.parts.device
        self._core = openvino.Core()
        # A folder per precision and thread count: OpenVINO's cache key leaves the
        # precision hint out, and a bf16 compile that loads an f32 blob crashes.
        cache = (
            self.parts.export.directory / OPENVINO_CACHE / f"{self.precision}-{self.parts.threads}"
        )
        self._core.set_property({"CACHE_DIR": str(cache)})
        self._for_batch(1)

    def _for_batch(self, size: int) -> Any:
        with self._lock:
            if size not in self._compiled:
                height, width = self.parts.input_size
                # Read afresh (mapped, in a fraction of a second) rather than kept: the
                # graph's own copy of the weights would stay resident beside the compiled
                # network's, about 350 MB.
                network = self._core.read_model(str(self.parts.export.onnx))
                network.reshape({INPUT_NAME: [size, 3, height, width]})
                self._idle[size] = queue.SimpleQueue()
                self._compiled[size] = self._core.compile_model(
                    network,
                    "CPU",
                    {
                        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[self.precision],
                        "INFERENCE_NUM_THREADS": self.parts.threads,
                        "PERFORMANCE_HINT": "LATENCY",
                        # The worker shares the CPU (effects, the API, other workers), and
                        # OpenVINO pins each process's threads to the same first cores: two
                        # pinned workers on two cores left one core idle, 6.3 s a forward
                        # each against 3.3 s unpinned (bench/RESULTS.md).
                        "ENABLE_CPU_PINNING": False,
                    },
                )
            return self._compiled[size]

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        # A request per forward in flight: one request is not thread-safe, and a
        # threads-pool worker may run forwards side by side.
        size = batch.shape[0]
        compiled = self._for_batch(size)
        try:
            request = self._idle[size].get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            request.infer({0: batch.numpy()})
            output = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            self._idle[size].put(request)
        return torch.from_numpy(output)


def _tensorrt_providers(parts: EngineParts) -> list[Any]:
    cache = parts.export.directory / TENSORRT_CACHE
    height, width = parts.input_size

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:{batch}x3x{height}x{width}"

    return [
        (
            "TensorrtExecutionProvider",
            {
                "device_id": _cuda_index(parts.device),
                "trt_fp16_enable": True,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_profile_min_shapes": shape(1),
                "trt_profile_opt_shapes": shape(TENSORRT_OPTIMAL_BATCH),
                "trt_profile_max_shapes": shape(TENSORRT_MAX_BATCH),
            },
        ),
        ("CUDAExecutionProvider", {"device_id": _cuda_index(parts.device)}),
    ]


def _cuda_index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


@dataclass(frozen=True)
class EngineSpec:
    """An engine by name: its precision, where it can run, and how it is built."""

    name: EngineName
    precision: str
    devices: frozenset[str]
    build: Callable[[EngineParts], Engine]
    #: Runs the ONNX export (else transparent-background's network in torch).
    exported: bool = False
    #: The Python package it needs, and ONNX Runtime's execution provider.
    package: str = "torch"
    provider: str = ""
    #: CPU flags one of which it needs (on a CPU).
    cpu_flags: tuple[str, ...] = ()

    def unavailable_because(self, device: str, cpu_flags: frozenset[str]) -> str | None:
        """Why this engine cannot run here (None: it can), its export aside."""
        kind = "cuda" if device.startswith("cuda") else "cpu"
        if kind not in self.devices:
            return f"{self.name} runs on {' or '.join(sorted(self.devices))}, not {kind}"
        if kind == "cpu" and self.cpu_flags and not set(self.cpu_flags) & cpu_flags:
            return f"{self.name} needs a CPU with {' or '.join(self.cpu_flags)}"
        if importlib.util.find_spec(self.package) is None:
            return f"{self.name} needs the {self.package} package"
        if self.provider:
            import onnxruntime

            if self.provider not in onnxruntime.get_available_providers():
                return f"{self.name} needs ONNX Runtime's {self.provider} (onnxruntime-gpu)"
        return None


def _torch(name: EngineName, precision: str, devices: set[str], **more: Any) -> EngineSpec:
    def build(parts: EngineParts) -> Engine:
        return TorchEngine(name, precision, parts)

    return EngineSpec(name, precision, frozenset(devices), build, **more)


def _onnxruntime(name: EngineName, precision: str, device: str, provider: str) -> EngineSpec:
    def build(parts: EngineParts) -> Engine:
        if provider == "TensorrtExecutionProvider":
            providers = _tensorrt_providers(parts)
        elif provider == "CUDAExecutionProvider":
            providers = [(provider, {"device_id": _cuda_index(parts.device)})]
        else:
            providers = [provider]
        return OnnxRuntimeEngine(name, precision, parts, providers)

    return EngineSpec(
        name,
        precision,
        frozenset({device}),
        build,
        exported=True,
        package="onnxruntime",
        provider=provider,
    )


def _openvino(name: EngineName, precision: str, **more: Any) -> EngineSpec:
    def build(parts: EngineParts) -> Engine:
        return OpenVinoEngine(name, precision, parts)

    return EngineSpec(
        name, precision, frozenset({"cpu"}), build, exported=True, package="openvino", **more
    )


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        _torch("torch-fp32", "fp32", {"cpu", "cuda"}),
        _torch("torch-bf16", "bf16", {"cpu", "cuda"}, cpu_flags=CPU_BF16_FLAGS),
        _torch("torch-fp16", "fp16", {"cuda"}),
        _torch("torch-tf32", "tf32", {"cuda"}),
        _onnxruntime("onnxruntime-fp32", "fp32", "cpu", "CPUExecutionProvider"),
        _onnxruntime("onnxruntime-cuda-fp32", "fp32", "cuda", "CUDAExecutionProvider"),
        _onnxruntime("onnxruntime-tensorrt-fp16", "fp16", "cuda", "TensorrtExecutionProvider"),
        _openvino("openvino-fp32", "fp32"),
        _openvino("openvino-bf16", "bf16", cpu_flags=OPENVINO_BF16_FLAGS),
    )
}


def exported_engines_for(device: str) -> list[str]:
    """The engines that run the export and can run on `device`: none (a CUDA machine
    without onnxruntime-gpu) and the export is not worth its minute and 355 MB."""
    flags = cpu_flags()
    return [
        name
        for name, spec in ENGINES.items()
        if spec.exported and spec.unavailable_because(device, flags) is None
    ]


def engine_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise EngineUnavailable(f"unknown engine {name!r}: one of {sorted(ENGINES)}") from None


def device_lost(error: BaseException) -> bool:
    """Whether `error`, raised by an engine's forward, says its device failed: a CUDA error
    (torch's AcceleratorError, or ONNX Runtime's report of a CUDA, cuDNN or cuBLAS failure)
    other than an allocation that failed. After one, the process's CUDA context is lost."""
    if isinstance(error, torch.AcceleratorError):
        return True
    message = str(error)
    return bool(CUDA_LIBRARY_FAILURE.search(message)) and not ALLOCATION_FAILURE.search(message)


def build_engine(name: str, parts: EngineParts) -> Engine:
    """Engine `name` on `parts.device`: EngineUnavailable when it cannot run there."""
    spec = engine_spec(name)
    reason = spec.unavailable_because(parts.device, cpu_flags())
    if reason is not None:
        raise EngineUnavailable(reason)
    if spec.exported and not parts.export.exists():
        raise EngineUnavailable(f"{name} needs the network's export ({parts.export.onnx})")
    return spec.build(parts)


CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def _cpuinfo_fields(cpuinfo: Path) -> dict[str, str]:
    """The first CPU's fields, read once: a start asks for the flags of every engine, and
    on a large machine the file is hundreds of kilobytes."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpuinfo_field(name: str, cpuinfo: Path = CPUINFO) -> str:
    """The first CPU's `name` line in /proc/cpuinfo ("" where it cannot be read)."""
    return _cpuinfo_fields(cpuinfo).get(name, "")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """This CPU's instruction flags, as /proc/cpuinfo lists them."""
    return frozenset(cpuinfo_field("flags", cpuinfo).split())
