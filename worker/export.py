"""The network exported to ONNX, once per checkpoint: what the exported engines run.

What is exported is transparent-background's own network with the checkpoint's weights
(worker/network.py builds it as a worker does), cut at the last saliency map before the
sigmoid, with a dynamic batch axis. The file lives in CUTFX_CACHE_DIR under a name made
of the model id (the checkpoint's hash) and everything that can change the graph: this
module's format number, torch's version and the opset. A new checkpoint or a new torch
therefore gets a new export, and an old one is never run against new weights.

torch's dynamo exporter (`torch.export`) is the one that can: the TorchScript exporter
fails on the Swin backbone's attention-mask construction (an `index_put` it cannot shape).
One line of the backbone does not trace with a dynamic batch: `window_reverse` finds the
batch size by `int(windows / (H * W / size / size))`, a float division the tracer turns
into the example's batch, so an export run at any other batch size scrambles photos
together (its logits are off by 2 to 60 %, and still correlate 0.9999 on random weights).
While exporting, that function is swapped for one that computes the same number by
integer division, which stays symbolic; the running network is never touched.

The exporter then runs onnxscript's optimiser over the graph. Its rewrite rules whose
pattern has several output nodes (`SlicesSplit`) are matched by trying, for each candidate
node, every node of the graph: on this network's 2,174 nodes that took 21 of the
optimiser's 25 s and rewrote nothing; without them the graph has the same nodes, weights
and shapes, byte for byte. They are left out while exporting (onnxscript names them only
privately; tests/worker/test_export.py fails if that changes).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.errors import ExportFailed

logger = logging.getLogger(__name__)

#: Bump when what is exported changes (the cut, the names, the axes): older exports are
#: then no longer found.
EXPORT_FORMAT = 2
ONNX_OPSET = 18
EXPORT_DIR = "engines"
ONNX_FILE = "network.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: The largest batch the dynamic axis admits; CUTFX_BATCH_MAX stays below it.
MAX_EXPORT_BATCH = 64
#: The example batch the graph is traced with: 2, so that the batch axis is not
#: specialised to the 0/1 sizes torch.export treats as constants.
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class ExportedNetwork:
    """An export on disk: the ONNX graph (its weights in `network.onnx.data` beside it)."""

    directory: Path

    @property
    def onnx(self) -> Path:
        return self.directory / ONNX_FILE

    def exists(self) -> bool:
        return self.onnx.is_file()

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.directory.glob(ONNX_FILE + "*"))


def export_key(model_id: str) -> str:
    """The export's name: the model's identity and whatever makes its graph differ."""
    torch_version = re.sub(r"[^0-9A-Za-z.]+", "_", torch.__version__)
    return f"{model_id}-onnx{EXPORT_FORMAT}-torch{torch_version}-opset{ONNX_OPSET}"


def exported_network(cache_dir: Path, model_id: str) -> ExportedNetwork:
    """Where the export of `model_id` is (or will be) kept; it may not exist yet."""
    return ExportedNetwork(cache_dir / EXPORT_DIR / export_key(model_id))


class SaliencyLogits(torch.nn.Module):
    """The network's last saliency map before the sigmoid as the module's one output:
    what the torch engine returns too (worker/engines.py)."""

    def __init__(self, network: Any) -> None:
        super().__init__()
        self.network = network

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network.forward_inspyre(batch)["saliency"][-1]
        return logits


def window_reverse(
    windows: torch.Tensor, window_size: int, height: int, width: int
) -> torch.Tensor:
    """transparent-background's Swin `window_reverse`, the batch size by integer division."""
    batch = windows.shape[0] // ((height // window_size) * (width // window_size))
    grid = windows.view(
        batch, height // window_size, width // window_size, window_size, window_size, -1
    )
    return grid.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, height, width, -1)


def single_output_rules(rules: Sequence[Any]) -> tuple[Any, ...]:
    """onnxscript rewrite rules whose pattern ends in one node, in their order."""
    return tuple(rule for rule in rules if rule._target_pattern.has_single_output_node)


@contextmanager
def replaced(owner: object, attribute: str, value: object) -> Iterator[None]:
    """`owner.attribute` is `value` inside, and what it was again after, however it ends."""
    original = getattr(owner, attribute)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def multi_output_rewrites_left_out() -> AbstractContextManager[None]:
    """onnxscript's optimiser without its multi-output rewrite rules (see above)."""
    from onnxscript import rewriter

    kept = single_output_rules(rewriter._DEFAULT_REWRITE_RULES)
    return replaced(rewriter, "_DEFAULT_REWRITE_RULES", kept)


def batch_axis_kept_symbolic() -> AbstractContextManager[None]:
    """The backbone's `window_reverse` replaced while the graph is traced (see above)."""
    from transparent_background.backbones import SwinTransformer

    return replaced(SwinTransformer, "window_reverse", window_reverse)


def export_network(network: Any, input_size: tuple[int, int], target: ExportedNetwork) -> float:
    """Export `network` (on the CPU, fp32) to `target`; seconds taken. Written into a
    temporary folder and renamed into place, so a reader never sees half a file and two
    exporters racing leave one whole export."""
    height, width = input_size
    example = torch.zeros((EXAMPLE_BATCH, 3, height, width))
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    target.directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=target.directory.parent))
    started = time.perf_counter()
    try:
        with torch.no_grad(), batch_axis_kept_symbolic(), multi_output_rewrites_left_out():
            torch.onnx.export(
                SaliencyLogits(network).eval(),
                (example,),
                str(scratch / ONNX_FILE),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"batch": {0: batch}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=True,
                verbose=False,
            )
        _move_into_place(scratch, target.directory)
    except Exception as exc:
        raise ExportFailed(f"exporting the network to ONNX failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    logger.info(
        "network exported",
        extra={
            "path": str(target.onnx),
            "seconds": round(seconds, 1),
            "bytes": target.size_bytes(),
        },
    )
    return seconds


def _move_into_place(scratch: Path, directory: Path) -> None:
    try:
        os.rename(scratch, directory)
    except OSError:
        if not (directory / ONNX_FILE).is_file():
            raise
        # Another process exported the same network first: its export is as good.


def ensure_exported(
    target: ExportedNetwork, input_size: tuple[int, int], cpu_network: Callable[[], Any]
) -> float:
    """Export the network `cpu_network` builds to `target` when there is no export there
    yet; seconds taken (0.0 when there was one, and nothing is built)."""
    if target.exists():
        return 0.0
    return export_network(cpu_network(), input_size, target)
