"""InSPyReNet from transparent-background's own model code, without what `Remover` imports.

`import transparent_background` runs the package's `__init__`, which imports
`Remover` and with it albumentations, torchvision's transforms, gdown, wget and
the GUI: seconds of a worker's cold start spent on code the worker never runs.
The network itself (`InSPyReNet.py`, its modules and the Swin backbone) needs
only torch, timm, kornia and OpenCV. So the package is registered under its
name without running its `__init__`, and its submodules import as they always
do: the network, its weights and their layout stay the package's.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "transparent_background"
CONFIG_FILE = "config.yaml"
#: The constructor arguments `Remover` builds the network with.
NETWORK_DEPTH = 64


def _package_spec() -> importlib.machinery.ModuleSpec:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{PACKAGE} is not installed")
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


def _register_package_without_init() -> None:
    if PACKAGE in sys.modules:
        return
    spec = _package_spec()
    package = types.ModuleType(PACKAGE)
    package.__path__ = list(spec.submodule_search_locations or ())
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules[PACKAGE] = package


def network_builder() -> Any:
    """transparent-background's `InSPyReNet_SwinB` constructor."""
    _register_package_without_init()
    from transparent_background.InSPyReNet import InSPyReNet_SwinB

    return InSPyReNet_SwinB


def build_network(mode: str, checkpoint: Path) -> Any:
    """The network for `mode` with the checkpoint's weights, on the CPU, in eval mode.

    As `Remover` builds it (the same constructor and arguments, strict loading),
    without the random initialisation the weights replace; the weights are mapped,
    not read, so worker processes share them in the page cache.
    """
    import torch

    from worker.uninitialised import WithoutRandomInit

    builder = network_builder()
    base_size = list(mode_config(mode)["base_size"])
    with WithoutRandomInit():
        network = builder(
            depth=NETWORK_DEPTH, pretrained=False, base_size=base_size, threshold=None
        )
    state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
    network.load_state_dict(state, strict=True, assign=True)
    return network.eval()
