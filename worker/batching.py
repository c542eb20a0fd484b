"""Dynamic batching: the segment tasks running in a worker's threads share one forward.

Each task thread prepares its own photo and hands the network's input to the
batcher, which runs on one model thread: it takes the first waiting input, waits
up to `wait_s` for more (at most `max_size` in all), groups them by input shape
and runs one forward per group. Each thread gets its own logits back and
finishes (mask, foreground, encode, upload) on its own, so the next batch's
forward runs while the last one's photos are being encoded. A forward that fails
for a batch is retried photo by photo, so a bad input fails only its own task.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from shared.errors import DeviceFailed

logger = logging.getLogger(__name__)

#: How often a waiting task thread looks up: a soft time limit, raised in the thread
#: between Python steps, reaches it within this.
WAIT_POLL_S = 0.05
#: CUTFX_BATCH_MAX=0 on CUDA. A guess until measured on a GPU (bench/gpu_check.py).
DEFAULT_CUDA_BATCH_MAX = 8

Forward = Callable[[Sequence[Any]], list[Any]]


@dataclass
class _Request:
    inputs: Any
    future: Future[Any] = field(default_factory=Future)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape)


def effective_batch_max(setting: int, device: str) -> int:
    """CUTFX_BATCH_MAX, where 0 means the device's default: batches on CUDA, none on a
    CPU (a batch of four is barely faster per photo there, and waits for company)."""
    if setting > 0:
        return setting
    return DEFAULT_CUDA_BATCH_MAX if device.startswith("cuda") else 1


def group_by_shape(requests: Sequence[_Request]) -> list[list[_Request]]:
    """Requests in arrival order, split so each group has one input shape."""
    groups: dict[tuple[int, ...], list[_Request]] = {}
    for request in requests:
        groups.setdefault(request.shape, []).append(request)
    return list(groups.values())


class Batcher:
    """Runs `forward` on batches of up to `max_size` inputs from many threads."""

    def __init__(
        self,
        forward: Forward,
        max_size: int,
        wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.forward = forward
        self.max_size = max(1, max_size)
        self.wait_s = max(0.0, wait_s)
        self.on_batch = on_batch
        self._waiting: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="cutfx-batcher", daemon=True)
        self._thread.start()

    def run(self, inputs: Any) -> Any:
        """This input's output, computed in a batch with whatever else is waiting."""
        request = _Request(inputs)
        self._waiting.put(request)
        try:
            while True:
                try:
                    return request.future.result(timeout=WAIT_POLL_S)
                except TimeoutError:
                    continue
        finally:
            # Given up (a time limit): the model thread skips it if it has not started.
            request.future.cancel()

    def stop(self) -> None:
        self._waiting.put(None)
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            for group in group_by_shape(batch):
                self._run_group(group)

    def _collect(self) -> list[_Request] | None:
        first = self._waiting.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_size:
            remaining = deadline - time.monotonic()
            try:
                # Past the wait, what is already queued still joins (it came while the
                # last forward ran).
                more = (
                    self._waiting.get(timeout=remaining)
                    if remaining > 0
                    else self._waiting.get_nowait()
                )
            except queue.Empty:
                break
            if more is None:  # stop() asked: this batch first, then stop
                self._waiting.put(None)
                break
            batch.append(more)
        return batch

    def _run_group(self, group: list[_Request]) -> None:
        live = [request for request in group if request.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outputs = self.forward([request.inputs for request in live])
        except DeviceFailed as exc:
            # Every forward after it would fail too: each photo's task hands back now.
            for request in live:
                request.future.set_exception(exc)
            return
        except Exception as exc:
            if len(live) == 1:
                live[0].future.set_exception(exc)
                return
            logger.warning(
                "batched forward failed: running its photos one by one",
                extra={"batch_size": len(live), "reason": repr(exc)},
            )
            for request in live:
                self._run_alone(request)
            return
        if self.on_batch is not None:
            self.on_batch(len(live))
        for request, output in zip(live, outputs, strict=True):
            request.future.set_result(output)

    def _run_alone(self, request: _Request) -> None:
        try:
            (output,) = self.forward([request.inputs])
        except Exception as exc:
            request.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(1)
        request.future.set_result(output)
