"""Dynamic batching: the batcher on its own, the batched network against single photos, and a
threads-pool gpu worker batching real queued jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis
import torch
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image

from api import create_app
from shared.errors import DeviceFailed
from shared.settings import Settings
from shared.telemetry import BATCH_SIZE, MODEL_INFERENCES, Metrics
from tests.conftest import WorkerProcesses, make_settings, redis_url_for
from tests.helpers import SAMPLE, sample_variant, submit, wait_finished
from worker.batching import Batcher, effective_batch_max
from worker.engine_choice import choose_engine
from worker.model import engine_parts, load_model
from worker.process import soft_time_limit

#: The database of a module's own workers (tests/conftest.py): the jobs wait in the
#: queue until the batching worker starts.
BATCH_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")


#: Batched and single forwards differ only by the rounding of other kernel blockings,
#: grown through the random network's huge activations (measured: 1.1e-4 at most in fp32).
@dataclass(frozen=True)
class Agreement:
    """How close a batched forward's output must be to the photo's own forward."""

    max_relative_logit_difference: float
    min_logit_correlation: float
    max_mean_mask_difference: float


#: fp32 batches are the single forward to rounding. bf16 keeps three digits: where the
#: CPU has AMX, oneDNN picks other kernels for a batch than for one photo, and the random
#: network's huge activations (~1e10) carry that rounding into the logits' scale (up to
#: 31% of their largest value measured) while their shape agrees (correlation > 0.9992)
#: and the masks, stretched per photo, stay within the precision tests' bound.
AGREEMENT = {
    "fp32": Agreement(1e-3, 0.99999, 1.0),
    "bf16": Agreement(0.5, 0.999, 2.0),
}


class RecordingForward:
    """A stand-in network: doubles its inputs, records each batch, fails on a NaN input."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[float]] = []
        self.delay_s = delay_s

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        time.sleep(self.delay_s)
        if any(torch.isnan(x).any() for x in inputs):
            raise ValueError("NaN input")
        self.batches.append([float(x.flatten()[0]) for x in inputs])
        return [x * 2 for x in inputs]


def run_together(forward: Any, inputs: list[torch.Tensor], **options: Any) -> list[Any]:
    """Each input from its own thread, all at once, through a Batcher on `forward` made
    with `options` and stopped after; each outcome (output or exception)."""
    batcher = Batcher(forward, **options)

    def one(x: torch.Tensor) -> Any:
        try:
            return batcher.run(x)
        except Exception as exc:
            return exc

    try:
        with ThreadPoolExecutor(len(inputs)) as pool:
            return list(pool.map(one, inputs))
    finally:
        batcher.stop()


def test_inputs_arriving_within_the_wait_share_one_forward():
    forward = RecordingForward()
    sizes: list[int] = []
    outputs = run_together(
        forward,
        [torch.full((2, 2), float(i)) for i in range(4)],
        max_size=4,
        wait_s=0.5,
        on_batch=sizes.append,
    )
    assert [float(o.flatten()[0]) for o in outputs] == [0.0, 2.0, 4.0, 6.0]
    assert len(forward.batches) == 1
    assert sorted(forward.batches[0]) == [0.0, 1.0, 2.0, 3.0]
    assert sizes == [4]


def test_a_batch_never_exceeds_the_maximum():
    forward = RecordingForward()
    outputs = run_together(
        forward, [torch.full((1,), float(i)) for i in range(7)], max_size=3, wait_s=0.3
    )
    assert sorted(float(o[0]) for o in outputs) == [2.0 * i for i in range(7)]
    assert max(len(batch) for batch in forward.batches) == 3
    assert sum(len(batch) for batch in forward.batches) == 7


def test_inputs_of_different_shapes_run_in_separate_forwards():
    forward = RecordingForward()
    small = [torch.full((2, 2), float(i)) for i in range(3)]
    large = [torch.full((3, 3), float(10 + i)) for i in range(2)]
    outputs = run_together(forward, small + large, max_size=8, wait_s=0.5)
    assert [tuple(o.shape) for o in outputs] == [(2, 2)] * 3 + [(3, 3)] * 2
    assert sorted(sorted(batch) for batch in forward.batches) == [[0.0, 1.0, 2.0], [10.0, 11.0]]


def test_a_bad_input_fails_only_its_own_request():
    forward = RecordingForward()
    inputs = [torch.full((2,), 1.0), torch.full((2,), float("nan")), torch.full((2,), 3.0)]
    outcomes = run_together(forward, inputs, max_size=4, wait_s=0.5)
    assert torch.equal(outcomes[0], torch.full((2,), 2.0))
    assert isinstance(outcomes[1], ValueError)
    assert torch.equal(outcomes[2], torch.full((2,), 6.0))


class LostDevice:
    """A stand-in network whose device failed: each forward raises as the model does."""

    def __init__(self) -> None:
        self.forwards = 0

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.forwards += 1
        raise DeviceFailed("torch-fp16 on cuda:0: CUDA error: an illegal memory access")


def test_a_lost_device_fails_the_whole_batch_without_a_forward_per_photo():
    forward = LostDevice()
    outcomes = run_together(
        forward, [torch.full((2,), float(i)) for i in range(3)], max_size=4, wait_s=0.5
    )
    assert [type(outcome) for outcome in outcomes] == [DeviceFailed] * 3
    assert forward.forwards == 1


def test_a_request_given_up_before_its_forward_is_skipped():
    forward = RecordingForward(delay_s=0.3)
    batcher = Batcher(forward, max_size=1, wait_s=0.0)
    busy = threading.Thread(target=batcher.run, args=(torch.full((1,), 1.0),))
    busy.start()
    time.sleep(0.05)  # the first forward is running; the next request waits behind it
    try:
        with pytest.raises(SoftTimeLimitExceeded), soft_time_limit(0.1, hard_grace_s=60):
            batcher.run(torch.full((1,), 2.0))
    finally:
        busy.join()
        batcher.stop()
    assert forward.batches == [[1.0]], "the abandoned input never reached the network"


def test_a_soft_time_limit_stops_a_task_thread():
    outcome: list[BaseException] = []

    def task() -> None:
        try:
            with soft_time_limit(0.2, hard_grace_s=60):
                while True:
                    time.sleep(0.01)
        except SoftTimeLimitExceeded as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=task)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert 0.2 <= time.monotonic() - started < 2


def test_a_thread_that_finishes_in_time_is_not_interrupted():
    with soft_time_limit(0.2, hard_grace_s=60):
        pass
    time.sleep(0.4)  # past the limit: nothing may be raised any more


@pytest.mark.parametrize(
    ("setting", "device", "expected"), [(0, "cuda:0", 8), (0, "cpu", 1), (4, "cpu", 4)]
)
def test_batching_is_on_by_default_on_cuda_only(setting, device, expected):
    assert effective_batch_max(setting, device) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_batched_forward_gives_each_photo_its_single_photo_output(checkpoint, precision):
    settings = Settings(
        model_mode="fast", model_ckpt=str(checkpoint), device="cpu", precision=precision
    )
    model = load_model(settings)
    if model.engine.precision != precision:
        # No engine runs bf16 on this CPU (an AVX2-only one): the setting runs the fp32
        # engine the fp32 case batches, and the six forwards below would repeat that
        # case's (65 s on a slow 2-core EPYC).
        as_fp32 = settings.model_copy(update={"precision": "fp32"})
        export = engine_parts(settings, "cpu", checkpoint).export
        fp32_choice = choose_engine(as_fp32, "cpu", export)
        assert (model.engine.precision, model.engine.name) == ("fp32", fp32_choice.name)
        return
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    photos = [sample, np.ascontiguousarray(sample[40:260, 100:400]), sample[:, ::-1].copy()]
    bound = AGREEMENT[precision]
    batched = model.saliency([model.prepare(photo) for photo in photos])
    for photo, logits in zip(photos, batched, strict=True):
        (alone,) = model.saliency([model.prepare(photo)])
        scale = alone.abs().max().item()
        difference = (logits - alone).abs().max().item()
        assert difference <= bound.max_relative_logit_difference * scale
        pair = torch.stack([logits.flatten(), alone.flatten()]).float()
        assert torch.corrcoef(pair)[0, 1].item() >= bound.min_logit_correlation
        batched_mask = model.finish(photo, logits)[..., 3].astype(np.float64)
        single_mask = model.finish(photo, alone)[..., 3].astype(np.float64)
        assert np.abs(batched_mask - single_mask).mean() <= bound.max_mean_mask_difference
    distinct = [logits.flatten()[:1000] for logits in batched]
    assert not torch.allclose(distinct[0], distinct[1]), "the photos really differ"


@pytest.mark.e2e
def test_a_threads_pool_gpu_worker_batches_queued_jobs(checkpoint, tmp_path, tmp_path_factory):
    """Four jobs wait in the queue; a gpu worker with CUTFX_BATCH_MAX=4 in a threads pool
    starts, takes all four segment tasks and runs fewer forwards than photos."""
    settings = make_settings(
        BATCH_REDIS_URL,
        tmp_path / "storage",
        model_ckpt=str(checkpoint),
        batch_max=4,
        batch_wait_ms=1000,
    )
    broker = redis.Redis.from_url(BATCH_REDIS_URL)
    broker.flushdb()
    api = create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()
    metrics = Metrics(redis.Redis.from_url(BATCH_REDIS_URL, decode_responses=True))
    job_ids = [submit(api, sample_variant(), effects="color").get_json()["id"] for _ in range(4)]

    workers = WorkerProcesses(settings, tmp_path_factory.mktemp("batch-logs"), {})
    workers.start()
    try:
        workers.wait_ready(broker)
        jobs = [wait_finished(api, job_id) for job_id in job_ids]
        inferences = metrics.counter_value(MODEL_INFERENCES)
        forwards, photos = metrics.histogram_totals(BATCH_SIZE)
    finally:
        workers.stop()
        broker.flushdb()

    assert [job["status"] for job in jobs] == ["succeeded"] * 4
    for job in jobs:
        assert job["results"]["cutout"]["status"] == "succeeded"
        assert job["results"]["color"]["status"] == "succeeded"
    assert inferences == 4
    assert photos == 4, "the four photos went through the batcher"
    assert forwards < photos, f"{forwards} forwards for {photos} photos: nothing batched"
