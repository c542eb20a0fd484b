"""InSPyReNet from transparent-background's own model code, without what `Remover` imports.

`import transparent_background` runs the package's `__init__`, which imports
`Remover` and with it albumentations, torchvision's transforms, gdown, wget and
the GUI: seconds of a worker's cold start spent on code the worker never runs.
The network itself (`InSPyReNet.py`, its modules and the Swin backbone) needs
only torch, timm, kornia and OpenCV. So the package is registered under its
name without running its `__init__`, and its submodules import as they always
do: the network, its weights and their layout stay the package's.

The same holds one level down. The Swin backbone takes three small helpers from
`timm.layers`, whose `__init__` imports torchvision, whose `ops` import
`torch._dynamo`: 2.5 s of a worker's start on a slow 2-core EPYC, 1.2 s on a
Zen 4. While the network's module is imported, `timm.layers` is those three,
imported from the timm files that define them; afterwards timm imports whole,
as ever, for any other code in the process.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

PACKAGE = "transparent_background"
CONFIG_FILE = "config.yaml"
#: The constructor arguments `Remover` builds the network with.
NETWORK_DEPTH = 64
#: What the Swin backbone imports from `timm.layers`, by the timm file that defines it.
TIMM_LAYERS_USED = {"DropPath": "drop", "to_2tuple": "helpers", "trunc_normal_": "weight_init"}
TIMM_PACKAGES = ("timm", "timm.layers")
#: transparent-background's module that defines the network.
NETWORK_MODULE = f"{PACKAGE}.InSPyReNet"
#: What torch says when the Swin backbone builds its window index with `torch.meshgrid`
#: and no `indexing`: it means the default ("ij"), so the warning asks nothing of us, and
#: every worker start, bake and demo printed it.
MESHGRID_WARNING = r"torch\.meshgrid: in an upcoming release"


def _package_spec(name: str = PACKAGE) -> importlib.machinery.ModuleSpec:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed")
    return spec


def package_dir() -> Path:
    """Where transparent-background is installed, found without importing it."""
    return Path(next(iter(_package_spec().submodule_search_locations or ())))


def mode_config(mode: str) -> dict[str, Any]:
    """The package's settings for `mode` (checkpoint name, md5, URL, input size)."""
    config = yaml.safe_load((package_dir() / CONFIG_FILE).read_text())
    if mode not in config:
        raise ValueError(f"unknown model mode {mode!r}: one of {sorted(config)}")
    return dict(config[mode])


def _package_without_init(name: str) -> types.ModuleType:
    """Package `name`, its submodules importable, its `__init__` not run."""
    spec = _package_spec(name)
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations or ())
    package.__spec__ = spec
    package.__file__ = spec.origin
    return package


def _register_package_without_init() -> None:
    if PACKAGE not in sys.modules:
        sys.modules[PACKAGE] = _package_without_init(PACKAGE)


@contextmanager
def _timm_layers_used_only() -> Iterator[None]:
    """`timm.layers` as the helpers the backbone uses, for the block (see the module's
    docstring). Where timm is imported already, or its files are laid out otherwise (a
    timm other than the lock's), timm imports whole instead."""
    bare: dict[str, types.ModuleType] = {}
    if "timm" not in sys.modules:
        try:
            # In this order: `timm.layers` is found through the bare `timm`'s path.
            for name in TIMM_PACKAGES:
                bare[name] = sys.modules[name] = _package_without_init(name)
            for attribute, defined_in in TIMM_LAYERS_USED.items():
                module = importlib.import_module(f"timm.layers.{defined_in}")
                setattr(bare["timm.layers"], attribute, getattr(module, attribute))
        except (ImportError, AttributeError) as error:
            logger.info("timm imports whole", extra={"reason": str(error)})
            _forget(bare)
    try:
        yield
    finally:
        # The files imported stay; a later `import timm` runs its `__init__` over them.
        _forget(bare)


def _forget(modules: dict[str, types.ModuleType]) -> None:
    for name, module in modules.items():
        if sys.modules.get(name) is module:
            del sys.modules[name]


def network_builder() -> Any:
    """transparent-background's `InSPyReNet_SwinB` constructor."""
    _register_package_without_init()
    # Once only: a second model (escalation, preview) finds the module imported, and
    # timm is then left alone for other threads.
    if NETWORK_MODULE not in sys.modules:
        with _timm_layers_used_only():
            importlib.import_module(NETWORK_MODULE)
    return sys.modules[NETWORK_MODULE].InSPyReNet_SwinB


def new_network(mode: str) -> Any:
    """The network for `mode` as `Remover` constructs it, its weights as initialised."""
    builder = network_builder()
    base_size = list(mode_config(mode)["base_size"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=MESHGRID_WARNING, category=UserWarning)
        return builder(depth=NETWORK_DEPTH, pretrained=False, base_size=base_size, threshold=None)


def build_network(mode: str, checkpoint: Path) -> Any:
    """The network for `mode` with the checkpoint's weights, on the CPU, in eval mode.

    As `Remover` builds it (the same constructor and arguments, strict loading),
    without the random initialisation the weights replace; the weights are mapped,
    not read, so worker processes share them in the page cache.
    """
    import torch

    from worker.uninitialised import WithoutRandomInit

    with WithoutRandomInit():
        network = new_network(mode)
    state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
    network.load_state_dict(state, strict=True, assign=True)
    return network.eval()
