"""The API process loads no image kernels: no OpenCV, numba or torch, even when it validates
effect parameters and describes the effects."""

from __future__ import annotations

from tests.conftest import UNIT_REDIS_URL, fresh_interpreter_json

PROBE = """
import json, sys
from pathlib import Path
from api import create_app
from tests.conftest import make_settings
from tests.helpers import image_bytes, submit

settings = make_settings(sys.argv[1], Path(sys.argv[2]))
client = create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()
answers = [
    submit(client, image_bytes(), params='{"popart": {"levels": 4}}').status_code,
    submit(client, image_bytes(), params='{"popart": {"levels": 99}}').status_code,
    client.get("/v1/effects").status_code,
    client.get("/v1/openapi.json").status_code,
]
heavy_modules = ("cv2", "numba", "torch", "transparent_background")
heavy = [name for name in heavy_modules if name in sys.modules]
print(json.dumps({"answers": answers, "heavy": heavy}))
"""


def test_the_api_validates_and_describes_effects_without_loading_image_kernels(
    redis_client, tmp_path
):
    report = fresh_interpreter_json(PROBE, UNIT_REDIS_URL, str(tmp_path / "storage"), timeout=120)
    assert report["answers"] == [202, 422, 200, 200]
    assert report["heavy"] == []
