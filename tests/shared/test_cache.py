"""ResultCache.get_or_store on a real Redis and real local storage."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from api.upload import normalise_upload
from shared.errors import TransientStorageError
from shared.jobs import JobRequest, StoredObject
from shared.jobs.model import ORIGINAL
from shared.jobs.plan import (
    ENTRY_PREFIX,
    Rendered,
    ResultCache,
    photo_sha256,
    pixels_sha256,
    source_key,
)
from shared.output import OutputFormat
from shared.storage import LocalStorage
from shared.telemetry import CACHE_LOOKUPS, Metrics

KEY = "results/ab/one.webp"
MAX_PIXELS, MAX_SIDE = 50_000_000, 1600


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "storage", "test-signing-key")


@pytest.fixture
def cache(text_redis, storage):
    return ResultCache(text_redis, storage, Metrics(text_redis), 600, where="worker")


def made(calls: list[int]):
    def make() -> Rendered:
        calls.append(1)
        return Rendered(b"RIFF....WEBP", "image/webp", 3, 2)

    return make


def test_a_miss_makes_stores_and_remembers_once(cache, storage):
    calls: list[int] = []
    first = cache.get_or_store(KEY, made(calls), "effect")
    second = cache.get_or_store(KEY, made(calls), "effect")
    assert calls == [1], "the second call found it"
    assert (first.hit, second.hit) == (False, True)
    assert first.stored == second.stored
    assert first.stored.byte_size == 12
    assert (first.stored.width, first.stored.height) == (3, 2)
    assert storage.get(KEY) == b"RIFF....WEBP"
    metrics = cache.metrics
    labels = {"kind": "effect", "where": "worker"}
    assert metrics.counter_value(CACHE_LOOKUPS, {**labels, "outcome": "miss"}) == 1
    assert metrics.counter_value(CACHE_LOOKUPS, {**labels, "outcome": "hit"}) == 1


def test_an_object_gone_from_storage_is_made_again(cache, storage):
    calls: list[int] = []
    cache.get_or_store(KEY, made(calls))
    storage.path_of(KEY).unlink()
    assert not cache.get_or_store(KEY, made(calls)).hit
    assert calls == [1, 1]


class FailingStorage(LocalStorage):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise TransientStorageError("storage is away")


def test_no_index_entry_points_at_an_object_that_was_not_written(text_redis, tmp_path):
    storage = FailingStorage(tmp_path / "storage", "k")
    cache = ResultCache(text_redis, storage, Metrics(text_redis), 600, where="worker")
    with pytest.raises(TransientStorageError):
        cache.get_or_store(KEY, made([]))
    assert text_redis.keys(ENTRY_PREFIX + "*") == []


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def decoded_digest(data: bytes) -> str:
    return pixels_sha256(normalise_upload(data, MAX_PIXELS, MAX_SIDE).pixels)


def test_files_of_the_same_picture_have_one_pixel_digest_and_a_changed_pixel_another():
    pixels = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    files = {
        "png": saved(picture, "PNG"),
        "png with text": saved(picture, "PNG", pnginfo=_with_text()),
        "tiff": saved(picture, "TIFF", compression="tiff_deflate"),
        "bmp": saved(picture, "BMP"),
        "lossless webp": saved(picture, "WEBP", lossless=True),
    }
    assert len(set(files.values())) == len(files), "five different files"
    assert {decoded_digest(data) for data in files.values()} == {pixels_sha256(pixels)}
    changed = pixels.copy()
    changed[47, 63, 2] ^= 1
    assert decoded_digest(saved(Image.fromarray(changed), "PNG")) != pixels_sha256(pixels)


def _with_text():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "a shop's image editor")
    return info


def test_the_same_bytes_in_another_shape_are_another_picture():
    flat = np.arange(48, dtype=np.uint8)
    assert pixels_sha256(flat.reshape(4, 4, 3)) != pixels_sha256(flat.reshape(2, 8, 3))


def request_for(**fields: object) -> JobRequest:
    values: dict[str, object] = {
        "input_sha256": "ab" * 32,
        "input_key": "inputs/ab/x-s1600.png",
        "width": 64,
        "height": 48,
        "effects": ("color",),
        "primary": None,
        "output": OutputFormat("png", None),
        "params": {},
        **fields,
    }
    return JobRequest(**values)  # type: ignore[arg-type]


def stored_input(digest: str | None) -> StoredObject:
    return StoredObject("inputs/ab/x-s1600.png", "image/png", 10, 64, 48, pixels_sha256=digest)


def test_the_cutouts_address_follows_the_pixels_not_the_uploads_bytes():
    pixels = "cd" * 32
    one = request_for(input_sha256="01" * 32, photo_sha256=photo_sha256(stored_input(pixels)))
    other = replace(one, input_sha256="02" * 32)
    assert source_key(one, MAX_SIDE, "model") == source_key(other, MAX_SIDE, "model")
    elsewhere = replace(one, photo_sha256=photo_sha256(stored_input("ef" * 32)))
    assert source_key(elsewhere, MAX_SIDE, "model") != source_key(one, MAX_SIDE, "model")


def test_an_input_stored_without_a_pixel_digest_keeps_the_uploads_address():
    """Inputs cached before they had a digest: their jobs keep the cutouts they had."""
    assert photo_sha256(stored_input(None)) == ""
    assert photo_sha256(stored_input("cd" * 32), stored_input(None)) == ""
    old = request_for(photo_sha256="")
    assert source_key(old, MAX_SIDE, "model") == source_key(
        request_for(photo_sha256="ab" * 32), MAX_SIDE, "model"
    )


def test_a_full_size_cutout_is_named_by_both_the_models_pixels_and_the_full_size_ones():
    model_reads, full_size = stored_input("11" * 32), stored_input("22" * 32)
    both = photo_sha256(model_reads, full_size)
    assert both not in ("", "11" * 32, "22" * 32)
    assert photo_sha256(model_reads, stored_input("33" * 32)) != both
    at_original = request_for(resolution=ORIGINAL, photo_sha256=both)
    assert source_key(at_original, MAX_SIDE, "model") != source_key(
        request_for(photo_sha256="11" * 32), MAX_SIDE, "model"
    )


def test_a_record_written_before_the_pixel_digest_reads_with_the_uploads_address():
    """Workers roll out before the API (README, Deployment): a newer worker reads the
    records an older API wrote, without photo_sha256, and names their cutouts as before."""
    written_before = json.loads(request_for(photo_sha256="cd" * 32).to_json())
    del written_before["photo_sha256"]
    read = JobRequest.from_json(json.dumps(written_before))
    assert read.photo_sha256 == ""
    assert source_key(read, MAX_SIDE, "model") == source_key(
        request_for(photo_sha256="ab" * 32), MAX_SIDE, "model"
    )
