"""Content addresses: what determines a result names the object that holds it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.encoding import OutputFormat
from shared.output_options import OutputOptions


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def input_key(input_sha256: str, max_side: int) -> str:
    return f"inputs/{input_sha256[:2]}/{input_sha256}-s{max_side}.png"


def cutout_key(input_sha256: str, max_side: int, model_id: str) -> str:
    digest = _digest("cutout", input_sha256, str(max_side), model_id)
    return f"cutouts/{digest[:2]}/{digest}.png"


def cutout_view_key(source: str, output: OutputFormat, options: OutputOptions | None = None) -> str:
    """The cutout in the client's format and options; a PNG request without options gets
    the lossless cutout itself."""
    options = options or OutputOptions()
    if output.name == "png" and not options.canonical():
        return source
    return effect_key(source, "cutout", {}, output, options)


def effect_key(
    cutout: str,
    effect: str,
    params: dict[str, Any],
    output: OutputFormat,
    options: OutputOptions | None = None,
) -> str:
    """The key of an effect result; its cutout's key already names input and model.
    Output options are named only when some differ from the defaults, so results
    without options keep the keys they always had."""
    parts = ["effect", cutout, effect, canonical_json(params), output.name, str(output.quality)]
    chosen = (options or OutputOptions()).canonical()
    if chosen:
        parts.append(canonical_json(chosen))
    digest = _digest(*parts)
    return f"results/{digest[:2]}/{digest}.{output.extension}"
