"""Model loading that does not need a worker: the network from the package's own code
without Remover's imports, mapped weights, device choice, and the same cutouts as
transparent-background's `Remover.process`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import DeviceFailed
from shared.settings import Settings
from tests.conftest import fresh_interpreter_json
from tests.helpers import SAMPLE
from tests.worker.test_foreground import MAX_ALPHA_WEIGHTED_DIFFERENCE, MAX_VISIBLE_MEAN_DIFFERENCE
from worker.model import LoadedModel, load_model, resolve_checkpoint, resolve_device
from worker.network import mode_config

#: What `import transparent_background` would pull in, and the worker never runs.
REMOVER_ONLY_MODULES = ("albumentations", "gdown", "wget", "transparent_background.Remover")
#: What `import timm.layers` would pull in (torchvision's ops import torch._dynamo), and
#: the backbone never runs.
TIMM_LAYERS_ONLY_MODULES = ("torchvision", "torch._dynamo")


def test_auto_picks_the_cpu_here_and_cuda_is_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


def test_the_networks_attention_refuses_channels_last_so_no_engine_lays_it_out_so():
    """Why the torch engines keep PyTorch's default layout on CUDA too, where cuDNN runs
    convolutions faster in channels_last: transparent-background's attention layers
    `view` their convolutions' outputs. A channels_last network failed its first forward
    on the CPU, and cuDNN keeps an input's layout in its output the same way
    (worker/model.py: network_on)."""
    from transparent_background.modules.layers import SelfAttention

    layer = SelfAttention(64, mode="h").eval()
    features = torch.rand(1, 64, 12, 12)
    with torch.no_grad():
        assert layer(features).shape == features.shape
        torch.nn.Module.to(layer, memory_format=torch.channels_last)
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            layer(features.contiguous(memory_format=torch.channels_last))


def test_the_modes_come_from_the_packages_own_config():
    assert mode_config("fast")["base_size"] == [384, 384]
    assert mode_config("base")["base_size"] == [1024, 1024]
    assert mode_config("base")["ckpt_name"] == "ckpt_base.pth"
    with pytest.raises(ValueError, match="unknown model mode"):
        mode_config("huge")


def test_a_missing_checkpoint_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="CUTFX_MODEL_CKPT points at"):
        resolve_checkpoint(Settings(model_ckpt=str(missing)))


def test_loading_skips_what_only_remover_needs_and_maps_the_weights(checkpoint):
    """In a fresh interpreter, as a worker starts: none of Remover's imports, and the
    weights are views of the mapped file, not copies."""
    script = f"""
import json, os, sys
from shared.errors import DeviceFailed
from shared.settings import Settings
from worker.model import load_model
model = load_model(Settings(
    model_mode="fast", model_ckpt={str(checkpoint)!r}, device="cpu", engine="torch-fp32"
))
path = os.path.realpath({str(checkpoint)!r})
spans = [
    [int(end, 16) for end in line.split()[0].split("-")]
    for line in open("/proc/self/maps") if line.rstrip().endswith(path)
]
weights = list(model.network.parameters())
print(json.dumps({{
    "loaded": sorted(m for m in {REMOVER_ONLY_MODULES!r} if m in sys.modules),
    "timm_layers_loaded": sorted(m for m in {TIMM_LAYERS_ONLY_MODULES!r} if m in sys.modules),
    "input_size": list(model.input_size),
    "mapped": all(any(a <= w.data_ptr() < b for a, b in spans) for w in weights),
}}))
"""
    facts = fresh_interpreter_json(script)
    assert facts == {
        "loaded": [],
        "timm_layers_loaded": [],
        "input_size": [384, 384],
        "mapped": True,
    }


@pytest.mark.parametrize(
    ("before", "timm_layers_used"),
    [
        ("import timm", None),
        ("", {"DropPath": "drop", "to_2tuple": "helpers", "trunc_normal_": "moved_away"}),
    ],
    ids=["timm-imported-already", "timm-laid-out-otherwise"],
)
def test_the_network_builds_with_timm_whole_where_its_helpers_cannot_be_had_alone(
    before, timm_layers_used
):
    """The backbone's helpers come from timm however timm stands, and timm is whole
    afterwards for any other code in the process."""
    script = f"""
import json, sys
{before}
import worker.network
if {timm_layers_used!r} is not None:
    worker.network.TIMM_LAYERS_USED = {timm_layers_used!r}
builder = worker.network.network_builder()
from transparent_background.backbones import SwinTransformer
import timm, timm.layers
print(json.dumps({{
    "builder": builder.__name__,
    "drop_path_is_timms": SwinTransformer.DropPath is timm.layers.DropPath,
    "timm_whole": hasattr(timm, "create_model"),
    "the_same_again": worker.network.network_builder() is builder,
    "timm_kept": sys.modules["timm"] is timm,
}}))
"""
    facts = fresh_interpreter_json(script)
    assert facts == {
        "builder": "InSPyReNet_SwinB",
        "drop_path_is_timms": True,
        "timm_whole": True,
        "the_same_again": True,
        "timm_kept": True,
    }


@pytest.fixture(scope="module")
def torch_model(checkpoint):
    """Our model in torch fp32, loaded once: the tests below compare it with Remover's."""
    return load_model(
        Settings(model_mode="fast", model_ckpt=str(checkpoint), device="cpu", engine="torch-fp32")
    )


class RemoverCutouts:
    """transparent-background's own Remover on the checkpoint, built once (its
    constructor fills a whole Swin-B at random first), and its cutout of each photo
    made once."""

    def __init__(self, checkpoint: Path) -> None:
        from transparent_background.Remover import Remover

        self.remover = Remover(mode="fast", device="cpu", ckpt=str(checkpoint))
        self._cutouts: dict[str, np.ndarray] = {}

    def cutout(self, name: str) -> np.ndarray:
        """Remover's cutout of `sample_photos()[name]`."""
        if name not in self._cutouts:
            self._cutouts[name] = self.remover.process(sample_photos()[name], type="rgba")
        return self._cutouts[name]


@pytest.fixture(scope="module")
def remover(checkpoint) -> RemoverCutouts:
    return RemoverCutouts(checkpoint)


def sample_photos() -> dict[str, np.ndarray]:
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return {"sample": sample, "crop": np.ascontiguousarray(sample[40:260, 100:400])}


def test_the_cutout_is_the_one_remover_process_gives(torch_model, remover):
    """The same checkpoint through transparent-background's own pipeline and ours, in fp32,
    with the foreground estimation Remover uses (pymatting's): the same RGBA, to the byte."""
    from pymatting import estimate_foreground_ml

    ours = replace(torch_model, matting=estimate_foreground_ml)
    for name, rgb in sample_photos().items():
        expected = remover.cutout(name)
        assert np.array_equal(ours.segment(rgb), expected)


def test_on_a_cpu_the_cutout_differs_from_removers_only_within_the_foreground_bounds(
    torch_model, remover
):
    """A CPU worker estimates the foreground with the torch port (no numba to compile at
    start): the same alpha to the byte, colours within tests/worker/test_foreground.py's
    bounds of pymatting's where they show."""
    sample = sample_photos()["sample"]
    expected = remover.cutout("sample").astype(np.float64)
    found = torch_model.segment(sample).astype(np.float64)
    assert np.array_equal(found[..., 3], expected[..., 3])
    alpha = expected[..., 3:] / 255
    difference = np.abs(found[..., :3] - expected[..., :3]) / 255
    assert (difference * alpha).sum() / (alpha.sum() * 3) <= MAX_ALPHA_WEIGHTED_DIFFERENCE
    assert difference[expected[..., 3] > 12].mean() <= MAX_VISIBLE_MEAN_DIFFERENCE


def test_built_without_random_init_the_network_is_the_one_remover_builds(torch_model, remover):
    """Skipping the constructor's random fills changes no weight and no raw output:
    the logits before the sigmoid equal those of Remover's own network, bit for bit."""
    theirs = remover.remover.model
    their_weights = theirs.state_dict()
    assert all(
        torch.equal(value, their_weights[name])
        for name, value in torch_model.network.state_dict().items()
    )
    photo = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        our_logits = torch_model.network.forward_inspyre(photo)["saliency"][-1]
        their_logits = theirs.forward_inspyre(photo)["saliency"][-1]
    assert torch.equal(our_logits, their_logits)


def test_random_fills_are_skipped_only_inside_the_mode():
    from worker.uninitialised import WithoutRandomInit

    weight = torch.zeros(4, 4)
    with WithoutRandomInit():
        torch.nn.init.kaiming_uniform_(weight)
        torch.nn.init.trunc_normal_(weight)
        weight.normal_()
        layer = torch.nn.Linear(4, 4)
        doubled = torch.ones(2) * 2
    assert torch.count_nonzero(weight) == 0
    assert torch.equal(doubled, torch.tensor([2.0, 2.0]))  # other operations still run
    assert layer.weight.shape == (4, 4)
    weight.normal_()
    assert torch.count_nonzero(weight) > 0


def test_a_cpu_warm_up_compiles_the_ending_without_a_forward(checkpoint, monkeypatch):
    """On a CPU a first forward costs little more than the next, so the warm-up pays
    only the foreground estimation's compilation, at the dtypes real photos use."""
    model = load_model(Settings(model_mode="fast", model_ckpt=str(checkpoint), device="cpu"))
    forwards: list[object] = []
    mattings: list[tuple[object, object]] = []
    estimate = model.matting
    monkeypatch.setattr(model.engine, "logits", forwards.append)

    def recorded(image, mask):
        mattings.append((image.dtype, mask.dtype))
        return estimate(image, mask)

    model.matting = recorded
    model.warm_up()
    assert forwards == []
    assert mattings == [(np.dtype(np.float64), np.dtype(np.float32))]
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    monkeypatch.undo()
    assert model.segment(sample).shape == (*sample.shape[:2], 4)
    assert mattings[-1] == mattings[0]  # a real photo reaches the compiled signature


def test_logits_that_are_not_finite_fail_the_cutout_with_a_named_error(torch_model):
    """As fp16 gave on a GPU with the generated checkpoint (logits about 1e10): a photo
    whose logits overflowed fails its cutout, never becomes a meaningless mask."""
    from shared.errors import InferenceFailed
    from worker.tasks import failure_code

    photo = np.asarray(Image.open(SAMPLE).convert("RGB"))
    logits = torch.zeros((1, *torch_model.input_size))
    assert torch_model.finish(photo, logits).shape == (*photo.shape[:2], 4)
    for bad in (float("nan"), float("inf"), float("-inf")):
        logits[0, 5, 7] = bad
        with pytest.raises(InferenceFailed, match=r"not finite.*CUTFX_ENGINE=torch-fp32") as caught:
            torch_model.finish(photo, logits)
        assert failure_code(caught.value) == "inference_failed"


def test_building_the_network_warns_of_nothing(checkpoint):
    """The Swin backbone's `torch.meshgrid` call without `indexing` made torch warn at
    every worker start, bake and demo; it means the default, so that warning is silenced.
    In a fresh interpreter: torch warns of it once a process."""
    script = f"""
import json, warnings
from pathlib import Path
from worker.network import build_network
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    build_network("fast", Path({str(checkpoint)!r}))
print(json.dumps([str(warning.message) for warning in caught]))
"""
    assert fresh_interpreter_json(script) == []


class FailingEngine:
    """An engine stand-in whose forward raises `error`."""

    name = "torch-fp32"
    precision = "fp32"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        raise self.error


def model_with(engine: FailingEngine) -> LoadedModel:
    return LoadedModel(
        engine=engine,  # type: ignore[arg-type]
        model_id="stand-in",
        mode="fast",
        device="cuda:0",
        random_weights=True,
        load_seconds=0.0,
        input_size=(8, 8),
        matting=lambda image, alpha: image,
    )


def test_a_device_error_under_the_forward_is_a_device_failure_and_others_are_themselves():
    lost = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(DeviceFailed, match="torch-fp32 on cuda:0: CUDA error") as failed:
        model_with(FailingEngine(lost)).saliency([torch.zeros((3, 8, 8))])
    assert failed.value.__cause__ is lost
    with pytest.raises(ValueError, match="a bug"):
        model_with(FailingEngine(ValueError("a bug"))).saliency([torch.zeros((3, 8, 8))])


#: What ONNX Runtime's binding raises when a CUDA call under a node fails (its message,
#: shortened).
ORT_NODE_FAILURE = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while"
    " running Conv node. Name:'/backbone/Conv' Status Message: {failure} ; GPU=0 ;"
    " hostname=gpu-node ; expr=cudaStreamSynchronize(stream);"
)


@pytest.mark.parametrize(
    "failure",
    [
        "CUDA failure 700: an illegal memory access was encountered",
        "CUDA failure 719: unspecified launch failure",
        "CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR",
        "CUBLAS failure 13: CUBLAS_STATUS_EXECUTION_FAILED",
    ],
)
def test_onnxruntimes_report_of_a_cuda_error_is_a_device_failure(failure):
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    lost = RuntimeException(ORT_NODE_FAILURE.format(failure=failure))
    with pytest.raises(DeviceFailed, match=f"torch-fp32 on cuda:0: .*{failure}") as failed:
        model_with(FailingEngine(lost)).saliency([torch.zeros((3, 8, 8))])
    assert failed.value.__cause__ is lost


@pytest.mark.parametrize(
    "failure",
    [
        "CUDA failure 2: out of memory",
        "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED",
        "Got invalid dimensions for input: input for the following indices",
    ],
)
def test_an_allocation_that_failed_or_an_error_of_the_input_leaves_the_device_in_service(
    failure,
):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    error = Fail(ORT_NODE_FAILURE.format(failure=failure))
    with pytest.raises(Fail) as raised:
        model_with(FailingEngine(error)).saliency([torch.zeros((3, 8, 8))])
    assert raised.value is error
