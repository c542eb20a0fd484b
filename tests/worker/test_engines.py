"""The inference engines: the exported network against transparent-background's own in
torch, on the same photos (raw logits, since random-weight masks saturate), with a
dynamic batch; the bake's record; and the worker's choice, by measurement and by rule."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import ConfigurationError, EngineUnavailable
from shared.settings import EngineName, Settings
from tests.helpers import SAMPLE
from worker.engine_choice import (
    MAX_LOGIT_RELATIVE_DIFFERENCE,
    MIN_LOGIT_CORRELATION,
    EngineTrial,
    allowed_precisions,
    choose_engine,
    read_record,
    record_path,
    write_record,
)
from worker.engine_trial import REFERENCE_ENGINE
from worker.engines import (
    AUTOCAST_DTYPES,
    ENGINES,
    OPENVINO_CACHE,
    ORT_ALLOW_SPINNING,
    EngineParts,
    Tf32MatrixProducts,
    TorchEngine,
    build_engine,
    cpu_flags,
    store_weights_as_autocast_casts_them,
)
from worker.export import EXPORT_FORMAT, ONNX_FILE, SaliencyLogits, export_key, exported_network
from worker.model import engine_parts, load_model, mask_from_logits

EXPORTED_CPU_ENGINES = ("onnxruntime-fp32", "openvino-fp32", "openvino-bf16")
BF16_FLAGS = frozenset({"avx2", "avx512_bf16", "amx_bf16"})
AVX2_FLAGS = frozenset({"avx2", "fma"})
#: An AMD EPYC of the Zen 4 kind: bf16 instructions, no AMX.
AVX512_BF16_FLAGS = frozenset({"avx2", "fma", "avx512f", "avx512_bf16"})


@pytest.fixture(scope="module")
def settings(checkpoint: Path) -> Settings:
    return Settings(model_mode="fast", model_ckpt=str(checkpoint), device="cpu")


@pytest.fixture(scope="module")
def parts(settings: Settings, checkpoint: Path):
    """The engines' parts, the network exported and measured as `cutfx bake` does (the
    test script's bake has done it already; alone, this does it once)."""
    from worker.bake import prepare_engines

    found = engine_parts(settings, "cpu", checkpoint)
    if not found.export.exists() or not read_record(found.export, "cpu"):
        prepare_engines(settings, checkpoint)
    return found


def photos() -> list[np.ndarray]:
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return [sample, np.ascontiguousarray(sample[40:260, 100:400]), sample[:, ::-1].copy()]


def logits_of(engine, batch: torch.Tensor) -> torch.Tensor:
    return engine.logits(batch).float().cpu()


def correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    pair = torch.stack([first.flatten().double(), second.flatten().double()])
    return float(torch.corrcoef(pair)[0, 1])


def relative_difference(expected: torch.Tensor, found: torch.Tensor) -> float:
    """Mean absolute difference over the mean magnitude: the random-weight maps of two
    photos correlate almost perfectly, and differ in scale and detail, which this sees."""
    return float((expected - found).abs().mean() / expected.abs().mean())


def runnable(names) -> list[str]:
    return [name for name in names if ENGINES[name].unavailable_because("cpu", cpu_flags()) is None]


def test_every_engine_the_settings_accept_is_registered():
    assert set(get_args(EngineName)) == set(ENGINES)
    with pytest.raises(ConfigurationError, match="CUTFX_ENGINE"):
        Settings.from_env({"CUTFX_ENGINE": "tensorflow"})


def test_the_export_is_keyed_by_the_checkpoint_and_the_exporter(tmp_path):
    first = exported_network(tmp_path, "inspyrenet-swinb-fast-aaaa")
    other = exported_network(tmp_path, "inspyrenet-swinb-fast-bbbb")
    assert first.directory != other.directory
    key = export_key("inspyrenet-swinb-fast-aaaa")
    assert key.startswith("inspyrenet-swinb-fast-aaaa-")
    assert f"onnx{EXPORT_FORMAT}" in key
    assert "torch2.14.1" in key


class BuiltEngines:
    """Each engine built once for the module, and each photo's logits through it alone,
    computed once: the parity, batch and thread tests compare the same forwards, and on
    two cores each forward is a second or more."""

    def __init__(self, parts) -> None:
        self.parts = parts
        self._engines: dict[str, object] = {}
        self._alone: dict[str, list[torch.Tensor]] = {}

    def engine(self, name: str):
        if name not in self._engines:
            self._engines[name] = build_engine(name, self.parts)
        return self._engines[name]

    def alone(self, name: str) -> list[torch.Tensor]:
        """Each of `photos()` through engine `name`, one photo per forward."""
        if name not in self._alone:
            engine = self.engine(name)
            self._alone[name] = [
                logits_of(engine, reference_input(self.parts, photo)) for photo in photos()
            ]
        return self._alone[name]


@pytest.fixture(scope="module")
def built(parts) -> BuiltEngines:
    return BuiltEngines(parts)


@pytest.mark.parametrize("name", EXPORTED_CPU_ENGINES)
def test_an_exported_engine_gives_the_networks_own_logits(built, name):
    if ENGINES[name].unavailable_because("cpu", cpu_flags()):
        pytest.skip(f"{name} cannot run on this CPU")
    tier = "fp32" if built.engine(name).precision == "fp32" else "reduced"
    references = built.alone(REFERENCE_ENGINE)
    for photo, expected, found in zip(photos(), references, built.alone(name), strict=True):
        assert correlation(expected, found) >= MIN_LOGIT_CORRELATION[tier]
        relative = relative_difference(expected, found)
        assert relative <= MAX_LOGIT_RELATIVE_DIFFERENCE[tier]
        masks = [mask_from_logits(each[0], photo.shape) * 255 for each in (expected, found)]
        difference = np.abs(masks[0] - masks[1])
        assert (difference.max() if tier == "fp32" else difference.mean()) <= 1.0


def reference_input(parts, photo: np.ndarray) -> torch.Tensor:
    from worker.model import prepared_input

    return prepared_input(photo, parts.input_size)[None]


@pytest.mark.parametrize("name", EXPORTED_CPU_ENGINES)
def test_a_batch_through_the_export_gives_each_photo_its_own_logits(built, name):
    """The batch axis is dynamic: three photos in one forward, each as it is alone."""
    if ENGINES[name].unavailable_because("cpu", cpu_flags()):
        pytest.skip(f"{name} cannot run on this CPU")
    engine = built.engine(name)
    tier = "fp32" if engine.precision == "fp32" else "reduced"
    inputs = torch.cat([reference_input(built.parts, photo) for photo in photos()])
    together = logits_of(engine, inputs)
    assert together.shape == (3, 1, *built.parts.input_size)
    for index, alone in enumerate(built.alone(name)):
        assert correlation(alone, together[index]) >= MIN_LOGIT_CORRELATION[tier]
        assert relative_difference(alone, together[index]) <= MAX_LOGIT_RELATIVE_DIFFERENCE[tier]
    for first, second in ((0, 1), (0, 2), (1, 2)):
        apart = relative_difference(together[first], together[second])
        assert apart >= 2 * MAX_LOGIT_RELATIVE_DIFFERENCE["reduced"], "distinct photos apart"


def test_openvino_keeps_a_compiled_network_per_precision(built):
    names = runnable(("openvino-fp32", "openvino-bf16"))
    if not names:
        pytest.skip("OpenVINO cannot run here")
    for name in names:
        built.alone(name)
    folders = {path.name for path in (built.parts.export.directory / OPENVINO_CACHE).iterdir()}
    threads = torch.get_num_threads()
    assert {f"{ENGINES[name].precision}-{threads}" for name in names} <= folders


def test_openvino_leaves_its_threads_unpinned_to_share_the_cpu(built):
    names = runnable(("openvino-fp32",))
    if not names:
        pytest.skip("OpenVINO cannot run here")
    compiled = built.engine(names[0])._for_batch(1)
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert compiled.get_property("INFERENCE_NUM_THREADS") == torch.get_num_threads()


def test_onnxruntime_threads_do_not_spin_to_share_the_cpu(built):
    options = built.engine("onnxruntime-fp32").session.get_session_options()
    assert options.get_session_config_entry(ORT_ALLOW_SPINNING) == "0"
    assert options.intra_op_num_threads == torch.get_num_threads()


def test_forwards_side_by_side_in_threads_agree(built):
    (name,) = runnable(("openvino-fp32",)) or ["onnxruntime-fp32"]
    engine = built.engine(name)
    batch = reference_input(built.parts, photos()[0])
    expected = built.alone(name)[0]
    found: list[torch.Tensor] = []
    threads = [
        threading.Thread(target=lambda: found.append(logits_of(engine, batch))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 3
    assert all(correlation(expected, each) >= MIN_LOGIT_CORRELATION["fp32"] for each in found)


class LayersOfTheNetworksKinds(torch.nn.Module):
    """A convolution, batch norm, Linear and layer norm, as the network chains them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.batch_norm = torch.nn.BatchNorm2d(8).eval()
        self.linear = torch.nn.Linear(8, 16)
        self.layer_norm = torch.nn.LayerNorm(16)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = self.batch_norm(self.conv(batch)).flatten(2).transpose(1, 2)
        return self.layer_norm(self.linear(features))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_weights_stored_as_autocast_casts_them_give_autocasts_own_output(precision):
    torch.manual_seed(0)
    layers = LayersOfTheNetworksKinds()
    batch = torch.randn(2, 3, 12, 12)
    dtype = AUTOCAST_DTYPES[precision]
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        expected = layers(batch)
        store_weights_as_autocast_casts_them(layers, precision)
        found = layers(batch)
    assert (layers.conv.weight.dtype, layers.linear.weight.dtype) == (dtype, dtype)
    assert layers.layer_norm.weight.dtype == layers.batch_norm.weight.dtype == torch.float32
    assert found.dtype == expected.dtype
    assert torch.equal(found, expected)


def test_the_torch_bf16_engine_gives_autocasts_own_logits(built):
    """The whole network: the engine's stored weights against casts on every forward."""
    if not runnable(("torch-bf16",)):
        pytest.skip("no bf16 instructions on this CPU")
    batch = reference_input(built.parts, photos()[0])
    cast_on_every_forward = SaliencyLogits(built.parts.network())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = cast_on_every_forward(batch).float()
    assert torch.equal(logits_of(built.engine("torch-bf16"), batch), expected)


def test_the_bake_records_every_engine_this_cpu_runs_and_the_worker_runs_its_pick(settings, parts):
    trials = {trial.name: trial for trial in read_record(parts.export, "cpu")}
    assert set(runnable(["torch-fp32", "torch-bf16", *EXPORTED_CPU_ENGINES])) <= set(trials)
    assert trials[REFERENCE_ENGINE].logit_correlation == 1.0
    for name in runnable(("onnxruntime-fp32", "openvino-fp32")):
        assert trials[name].holds_parity, trials[name]
    choice = choose_engine(settings, "cpu", parts.export)
    allowed = {"fp32", "bf16"} if runnable(["torch-bf16"]) else {"fp32"}
    fastest = min(
        (t for t in trials.values() if t.holds_parity and t.precision in allowed),
        key=lambda trial: trial.forward_ms,
    )
    assert choice.name == fastest.name
    assert "baked on this machine" in choice.reason
    model = load_model(settings)
    assert model.engine.name == choice.name
    assert model.segment(photos()[1]).shape == (*photos()[1].shape[:2], 4)


def trial(name: str, forward_ms: float, correlation: float = 1.0) -> EngineTrial:
    return EngineTrial(name, ENGINES[name].precision, forward_ms, correlation, 0.0, 0.0, 0.0)


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """A fake export folder on this machine (a record, no network), and CPU flags chosen
    by the test."""
    export = exported_network(tmp_path, "inspyrenet-swinb-fast-0123456789abcdef")
    export.directory.mkdir(parents=True)
    export.onnx.write_bytes(b"stand-in")

    def with_flags(flags: frozenset[str]) -> None:
        monkeypatch.setattr("worker.engine_choice.cpu_flags", lambda *_: flags)

    with_flags(BF16_FLAGS)
    return export, with_flags


def test_the_fastest_engine_that_held_parity_is_chosen(measured):
    export, _ = measured
    write_record(
        export,
        "cpu",
        [
            trial("torch-fp32", 1800),
            trial("openvino-bf16", 150, correlation=0.99),  # fast, but off parity
            trial("openvino-fp32", 850),
            trial("onnxruntime-fp32", 1200),
        ],
    )
    choice = choose_engine(Settings(device="cpu"), "cpu", export)
    assert choice.name == "openvino-fp32"
    assert "850 ms" in choice.reason
    assert "onnxruntime-fp32 1200 ms" in choice.reason
    fp32_only = choose_engine(Settings(device="cpu", precision="fp32"), "cpu", export)
    assert fp32_only.name == "openvino-fp32"


def test_a_precision_the_settings_refuse_is_not_chosen_even_when_fastest(measured):
    export, _ = measured
    write_record(export, "cpu", [trial("torch-fp32", 1800), trial("openvino-bf16", 200)])
    assert choose_engine(Settings(device="cpu"), "cpu", export).name == "openvino-bf16"
    refused = choose_engine(Settings(device="cpu", precision="fp32"), "cpu", export)
    assert refused.name == "torch-fp32"


def test_another_machines_record_is_not_used(measured, monkeypatch):
    export, _ = measured
    write_record(export, "cpu", [trial("torch-fp32", 1800), trial("onnxruntime-fp32", 100)])
    assert choose_engine(Settings(device="cpu"), "cpu", export).name == "onnxruntime-fp32"
    monkeypatch.setattr("worker.engine_choice.cpuinfo_field", lambda _: "Another CPU")
    assert not record_path(export, "cpu").exists()
    choice = choose_engine(Settings(device="cpu"), "cpu", export)
    assert choice.name == "openvino-bf16"
    assert "not measured on this machine" in choice.reason


def test_a_bake_at_another_thread_count_on_this_cpu_decides_before_the_rules(measured, monkeypatch):
    export, _ = measured
    for threads, fastest in ((2, "torch-bf16"), (8, "onnxruntime-fp32")):
        monkeypatch.setattr("worker.engine_choice.torch.get_num_threads", lambda t=threads: t)
        write_record(export, "cpu", [trial("torch-fp32", 1800), trial(fastest, 900)])
    monkeypatch.setattr("worker.engine_choice.torch.get_num_threads", lambda: 1)
    assert not record_path(export, "cpu").exists()
    choice = choose_engine(Settings(device="cpu"), "cpu", export)
    assert choice.name == "torch-bf16", "the nearest thread count's record"
    assert "on this CPU at 2 threads (this worker runs 1)" in choice.reason
    monkeypatch.setattr("worker.engine_choice.torch.get_num_threads", lambda: 6)
    assert choose_engine(Settings(device="cpu"), "cpu", export).name == "onnxruntime-fp32"


def test_without_a_record_the_rules_follow_the_cpus_flags(measured):
    export, with_flags = measured
    assert choose_engine(Settings(device="cpu"), "cpu", export).name == "openvino-bf16"
    with_flags(AVX2_FLAGS)
    choice = choose_engine(Settings(device="cpu"), "cpu", export)
    assert choice.name == "openvino-fp32"
    assert "at fp32" in choice.reason
    with_flags(AVX512_BF16_FLAGS)
    choice = choose_engine(Settings(device="cpu"), "cpu", export)
    assert choice.name == "openvino-fp32"
    assert "at fp32" in choice.reason, "the engine's precision, not the CPU's best"


def test_without_an_export_the_worker_runs_eager_torch(measured, tmp_path):
    _, with_flags = measured
    missing = exported_network(tmp_path / "empty", "inspyrenet-swinb-fast-ffff")
    choice = choose_engine(Settings(device="cpu"), "cpu", missing)
    assert choice.name == "torch-bf16"
    assert "cutfx bake" in choice.reason
    with_flags(AVX2_FLAGS)
    assert choose_engine(Settings(device="cpu"), "cpu", missing).name == "torch-fp32"


def test_on_cuda_the_rule_is_torch_at_the_configured_precision(measured, monkeypatch):
    export, _ = measured
    monkeypatch.setattr("worker.engine_choice.torch.cuda.get_device_name", lambda _: "H200")
    assert choose_engine(Settings(), "cuda:0", export).name == "torch-fp16"
    assert choose_engine(Settings(precision="bf16"), "cuda:0", export).name == "torch-bf16"


def test_on_cuda_tf32_is_a_candidate_wherever_a_reduced_precision_is(measured, monkeypatch):
    """As an H200 measured them with the generated checkpoint: every engine alike for one
    photo, fp16 overflowing to NaN, TF32 within the reduced bounds and fastest in batches."""
    export, _ = measured
    assert allowed_precisions("cuda:0", "fp16") == {"fp32", "fp16", "tf32"}
    assert allowed_precisions("cuda:0", "bf16") == {"fp32", "bf16", "tf32"}
    assert allowed_precisions("cuda:0", "fp32") == {"fp32"}
    monkeypatch.setattr("worker.engine_choice.torch.cuda.get_device_name", lambda _: "H200")
    batch = 8
    write_record(
        export,
        "cuda:0",
        [
            replace(trial("torch-fp32", 46.3), batch_size=batch),
            replace(trial("torch-fp16", 23.6, correlation=float("nan")), batch_size=batch),
            replace(trial("torch-tf32", 26.8, correlation=0.99994), batch_size=batch),
        ],
    )
    choice = choose_engine(Settings(), "cuda:0", export)
    assert choice.name == "torch-tf32"
    assert "27 ms a photo in batches of 8" in choice.reason
    assert choose_engine(Settings(precision="fp32"), "cuda:0", export).name == "torch-fp32"


class RecordsTf32(torch.nn.Module):
    """A stand-in network that notes whether fp32 matrix products ran on TF32."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward_inspyre(self, batch: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        self.seen.append(torch.backends.cuda.matmul.allow_tf32)
        return {"saliency": [batch[:, :1]]}


@pytest.fixture
def tf32_off():
    """torch's TF32 switch off for the test, and as it was after (monkeypatch cannot
    restore it: the module answers it through __getattr__)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def test_the_tf32_engine_turns_tf32_on_for_its_forwards_only(parts, tf32_off):
    network = RecordsTf32()
    stand_in = EngineParts("cpu", 1, (8, 8), lambda: network, parts.export)
    tf32 = TorchEngine("torch-tf32", "tf32", stand_in)
    fp32 = TorchEngine("torch-fp32", "fp32", stand_in)
    batch = torch.ones(2, 3, 8, 8)
    assert torch.equal(tf32.logits(batch), batch[:, :1])
    fp32.logits(batch)
    assert network.seen == [True, False]
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_tf32_stays_on_until_the_last_forward_side_by_side_ends(tf32_off):
    products = Tf32MatrixProducts()
    first_inside, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with products:
            first_inside.set()
            second_done.wait(5)
            seen.append(torch.backends.cuda.matmul.allow_tf32)

    def second() -> None:
        first_inside.wait(5)
        with products:
            pass
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [True], "the second forward's end left the first's on"
    assert torch.backends.cuda.matmul.allow_tf32 is False


class FirstForwardCompiles:
    """A stand-in engine on a clock of its own: its first forward takes 5 s (compiling),
    the next ones 0.2, 0.3, 0.4 s ..."""

    name = "stand-in"
    precision = "fp32"

    def __init__(self) -> None:
        self.now = 0.0
        self.forwards = 0

    def clock(self) -> float:
        return self.now

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        self.now += 5.0 if self.forwards == 1 else 0.1 * self.forwards
        return batch


def test_a_trial_times_each_of_its_forwards_and_a_slow_first_one_is_not_the_median():
    from worker.engine_trial import TRIAL_RUNS, forward_seconds

    engine = FirstForwardCompiles()
    seconds = forward_seconds(engine, torch.zeros(1, 3, 4, 4), clock=engine.clock)
    assert engine.forwards == TRIAL_RUNS == 3, "every forward is timed"
    assert seconds == pytest.approx(0.3), "the median of 5.0, 0.2 and 0.3"


def test_the_trial_times_a_photos_share_of_a_batch_of_the_workers_size(tmp_path, monkeypatch):
    import worker.engine_trial

    export = exported_network(tmp_path, "x")
    engine = TorchEngine("torch-fp32", "fp32", EngineParts("cpu", 1, (4, 4), RecordsTf32, export))
    timed: list[torch.Tensor] = []

    def forward_seconds(engine, batch, runs):
        timed.append(batch)
        return 0.8

    monkeypatch.setattr(worker.engine_trial, "forward_seconds", forward_seconds)
    inputs = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 3, 4, 4)
    logits = torch.randn(3, 1, 4, 4)
    shapes: list[tuple[int, ...]] = [(4, 4, 3)] * 3
    reference = worker.engine_trial.Reference(
        inputs, shapes, logits, worker.engine_trial.masks(logits, shapes)
    )
    batched = worker.engine_trial.compared("torch-fp32", engine, logits, reference, 1, 4)
    alone = worker.engine_trial.compared("torch-fp32", engine, logits, reference, 1)
    assert [batch[:, 0, 0, 0].tolist() for batch in timed] == [[0, 1, 2, 0], [0]]
    assert (batched.forward_ms, batched.batch_size) == (200.0, 4)
    assert (alone.forward_ms, alone.batch_size) == (800.0, 1)
    assert batched.holds_parity


def test_a_bake_measures_at_the_workers_batch_and_keeps_only_a_record_made_at_it(
    settings, parts, checkpoint, tmp_path, monkeypatch
):
    """The batch is CUTFX_BATCH_MAX's (a CPU's default is 1, CUDA's 8): a record made at
    another batch is measured again. The measurement is a stand-in, as above."""
    import worker.engine_trial
    import worker.export
    from worker.bake import MEASURED_BEFORE, MEASURED_NOW, prepare_engines

    monkeypatch.setattr(worker.export, "export_network", exporting_a_copy(parts, []))
    batches: list[int] = []

    def measure(engine_parts, trial_photos, names=(), runs=0, batch_size=1):
        batches.append(batch_size)
        return [replace(trial("torch-fp32", 1800), batch_size=batch_size)]

    monkeypatch.setattr(worker.engine_trial, "measure_engines", measure)
    alone = settings.with_overrides(cache_dir=tmp_path)
    in_fours = alone.with_overrides(batch_max=4)
    assert prepare_engines(alone, checkpoint)["engines_measured"] == MEASURED_NOW
    assert prepare_engines(in_fours, checkpoint)["engines_measured"] == MEASURED_NOW
    assert prepare_engines(in_fours, checkpoint)["engines_measured"] == MEASURED_BEFORE
    assert batches == [1, 4]


def test_only_engines_that_can_run_on_a_device_count_as_its_exported_engines():
    """ONNX Runtime's CPU build (the one installed here) runs no exported engine on CUDA."""
    import onnxruntime

    from worker.engines import exported_engines_for

    assert {"onnxruntime-fp32", "openvino-fp32"} <= set(exported_engines_for("cpu"))
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert exported_engines_for("cuda:0") == []


def test_a_bake_where_no_exported_engine_runs_exports_nothing_and_keeps_its_record(
    settings, checkpoint, tmp_path, monkeypatch
):
    """A CUDA machine without onnxruntime-gpu runs no engine on the export, so its bake
    spends no minute and 355 MB on one; the torch engines' record is still kept where the
    workers read it. Here the CPU's exported engines lack their packages, and the
    measurement is a stand-in."""
    import importlib.util

    import worker.engine_trial
    import worker.export
    from worker.bake import MEASURED_NOW, prepare_engines
    from worker.engine_choice import read_record
    from worker.model import engine_parts

    exported: list[Path] = []
    monkeypatch.setattr(worker.export, "export_network", lambda *args: exported.append(args[2]))
    find_spec = importlib.util.find_spec
    missing = {"onnxruntime", "openvino"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in missing else find_spec(name, *a),
    )
    monkeypatch.setattr(
        worker.engine_trial, "measure_engines", lambda *args, **kw: [trial("torch-fp32", 1800)]
    )
    fresh = settings.with_overrides(cache_dir=tmp_path)

    prepared = prepare_engines(fresh, checkpoint)

    assert exported == []
    assert (prepared["export_s"], prepared["export_mb"]) == (0.0, 0)
    assert prepared["engines_measured"] == MEASURED_NOW
    export = engine_parts(fresh, "cpu", checkpoint).export
    assert not export.exists()
    assert [t.name for t in read_record(export, "cpu")] == ["torch-fp32"]


class GivesLogits:
    """A stand-in engine at a reduced precision whose forwards give `value` everywhere."""

    name = "torch-fp16"
    precision = "fp16"

    def __init__(self, value: float) -> None:
        self.value = value

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.full((batch.shape[0], 1, *batch.shape[2:]), self.value)


def test_an_unmeasured_reduced_precision_that_overflows_gives_way_to_fp32(parts):
    """On CUDA with no bake, torch at CUTFX_PRECISION is tried on one of the bake's photos
    first (worker/model.py load_model); its logits not finite, torch fp32 runs."""
    from worker.engine_choice import EngineChoice
    from worker.model import fp32_unless_finite

    by_rule = EngineChoice("torch-fp16", "CUDA: not measured on this GPU yet", by_rule=True)
    finite = GivesLogits(3.0)
    assert fp32_unless_finite(by_rule, finite, parts) == (by_rule, finite)
    choice, engine = fp32_unless_finite(by_rule, GivesLogits(float("nan")), parts)
    assert (choice.name, engine.name, engine.precision) == ("torch-fp32", "torch-fp32", "fp32")
    assert "not finite with this checkpoint (its values overflow fp16)" in choice.reason
    assert not choice.by_rule


def test_a_forced_engine_that_cannot_run_here_is_refused_with_the_reason(parts, monkeypatch):
    with pytest.raises(EngineUnavailable, match="runs on cuda, not cpu"):
        build_engine("torch-fp16", parts)
    with pytest.raises(EngineUnavailable, match="runs on cuda, not cpu"):
        build_engine("torch-tf32", parts)
    monkeypatch.setattr("worker.engines.cpu_flags", lambda *_: AVX2_FLAGS)
    with pytest.raises(EngineUnavailable, match="needs a CPU with avx512_bf16 or amx_bf16"):
        build_engine("torch-bf16", parts)
    with pytest.raises(EngineUnavailable, match="needs a CPU with amx_bf16"):
        build_engine("openvino-bf16", parts)
    monkeypatch.setattr("worker.engines.cpu_flags", lambda *_: AVX512_BF16_FLAGS)
    with pytest.raises(EngineUnavailable, match="needs a CPU with amx_bf16"):
        build_engine("openvino-bf16", parts)
    missing = replace(parts, export=exported_network(Path("/nonexistent"), "x"))
    with pytest.raises(EngineUnavailable, match="needs the network's export"):
        build_engine("onnxruntime-fp32", missing)
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        build_engine("tensorflow", parts)


def test_a_forced_exported_engine_exports_first_when_nothing_was_baked(
    settings, parts, tmp_path, monkeypatch
):
    """CUTFX_ENGINE names an exported engine and no bake ran: the worker exports at
    start (once) rather than refusing; `auto` never does (test above). The export itself
    is the bake's (run by the `parts` fixture); here a copy of it stands in."""
    import worker.export

    exported: list[Path] = []
    monkeypatch.setattr(worker.export, "export_network", exporting_a_copy(parts, exported))
    fresh = settings.with_overrides(cache_dir=tmp_path, engine="onnxruntime-fp32")
    model = load_model(fresh)
    assert model.engine.name == "onnxruntime-fp32"
    assert len(exported) == 1
    assert exported[0].parent.parent == tmp_path
    assert load_model(fresh).engine.name == "onnxruntime-fp32"
    assert len(exported) == 1, "exported once"


def exporting_a_copy(parts, exported: list[Path]):
    """A stand-in for worker.export.export_network that copies the bake's export (its
    files, not its caches or records) and notes where."""

    def export_copy(network, input_size, target):
        exported.append(target.directory)
        shutil.copytree(parts.export.directory, target.directory, ignore=ignore_caches)
        return 0.0

    return export_copy


def ignore_caches(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if not name.startswith(ONNX_FILE)]


def test_a_later_bake_keeps_this_machines_record_until_an_engine_package_changes(
    settings, parts, checkpoint, tmp_path, monkeypatch
):
    """The engines are measured once per machine, export and engine packages: a second
    bake keeps the record (its forwards are the bake's minute or two), a changed
    package or --remeasure measures again. The measurement is a stand-in here; the
    script's bake and the `parts` fixture run the real one."""
    import worker.engine_choice
    import worker.engine_trial
    import worker.export
    from worker.bake import MEASURED_BEFORE, MEASURED_NOW, prepare_engines

    monkeypatch.setattr(worker.export, "export_network", exporting_a_copy(parts, []))
    measured: list[int] = []

    def measure(engine_parts, trial_photos, names=(), runs=0, batch_size=1):
        measured.append(len(trial_photos))
        return [trial("torch-fp32", 1800), trial("onnxruntime-fp32", 900 + len(measured))]

    monkeypatch.setattr(worker.engine_trial, "measure_engines", measure)
    fresh = settings.with_overrides(cache_dir=tmp_path)

    first = prepare_engines(fresh, checkpoint)
    again = prepare_engines(fresh, checkpoint)
    assert (first["engines_measured"], again["engines_measured"]) == (MEASURED_NOW, MEASURED_BEFORE)
    assert again["engines_ms"] == first["engines_ms"] == "torch-fp32 1800, onnxruntime-fp32 901"
    assert len(measured) == 1

    assert prepare_engines(fresh, checkpoint, remeasure=True)["engines_measured"] == MEASURED_NOW
    assert len(measured) == 2

    installed = worker.engine_choice.engine_versions()
    assert {"torch", "onnxruntime", "openvino"} <= set(installed), installed
    upgraded = {**installed, "torch": installed["torch"] + ".post1"}
    monkeypatch.setattr(worker.engine_choice, "engine_versions", lambda: upgraded)
    assert str(prepare_engines(fresh, checkpoint)["engines_ms"]).endswith("onnxruntime-fp32 903")
    assert len(measured) == 3
    assert prepare_engines(fresh, checkpoint)["engines_measured"] == MEASURED_BEFORE
    assert len(measured) == 3


def test_an_export_only_bake_measures_nothing_and_the_next_bake_measures_without_exporting(
    settings, parts, checkpoint, tmp_path, monkeypatch
):
    """scripts/test.sh exports (40 s on one core) while it lints, and measures after,
    when the forwards have the cores to themselves. The export and the measurement are
    stand-ins, as above."""
    import worker.engine_trial
    import worker.export
    from worker.bake import MEASURED_LATER, MEASURED_NOW, prepare_engines
    from worker.engine_choice import read_record

    exported: list[Path] = []
    monkeypatch.setattr(worker.export, "export_network", exporting_a_copy(parts, exported))
    measured: list[int] = []

    def measure(engine_parts, trial_photos, names=(), runs=0, batch_size=1):
        measured.append(batch_size)
        return [trial("torch-fp32", 1800), trial("onnxruntime-fp32", 900)]

    monkeypatch.setattr(worker.engine_trial, "measure_engines", measure)
    fresh = settings.with_overrides(cache_dir=tmp_path)
    export = engine_parts(fresh, "cpu", checkpoint).export

    exported_only = prepare_engines(fresh, checkpoint, measure=False)
    assert (exported_only["engines_measured"], exported_only["engines_ms"]) == (MEASURED_LATER, "")
    assert len(exported) == 1
    assert export.exists()
    assert measured == []
    assert read_record(export, "cpu") == []

    then = prepare_engines(fresh, checkpoint)
    assert then["engines_measured"] == MEASURED_NOW
    assert then["engines_ms"] == "torch-fp32 1800, onnxruntime-fp32 900"
    assert len(exported) == 1
    assert measured == [1]
    assert [t.name for t in read_record(export, "cpu")] == ["torch-fp32", "onnxruntime-fp32"]
