"""Fetching a checkpoint over real HTTP: verified by digest before it is moved in place."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from shared.errors import ChecksumMismatch
from worker.bake import fetch_verified
from worker.checkpoint import download_verified, file_digest, has_digest


@pytest.fixture
def published(tmp_path):
    source = tmp_path / "release.pth"
    source.write_bytes(b"weights" * 1000)
    return source


@pytest.fixture
def url_of(published):
    """A loopback HTTP server for the published file's folder; yields the file's URL."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(published.parent)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{published.name}"
    server.shutdown()
    server.server_close()


def test_a_download_with_the_right_digest_lands(published, url_of, tmp_path):
    sha = hashlib.sha256(published.read_bytes()).hexdigest()
    target = tmp_path / "models" / "ckpt.pth"
    assert download_verified(url_of, target, "sha256", sha, 5) == target
    assert target.read_bytes() == published.read_bytes()
    assert file_digest(target, "md5") == hashlib.md5(published.read_bytes()).hexdigest()
    assert has_digest(target, "sha256", sha)


def test_a_wrong_digest_leaves_nothing_behind(published, url_of, tmp_path):
    target = tmp_path / "ckpt.pth"
    with pytest.raises(ChecksumMismatch):
        download_verified(url_of, target, "sha256", "0" * 64, 5)
    assert list(tmp_path.iterdir()) == [published]


def test_bake_refuses_a_mismatch_and_reuses_a_verified_file(published, url_of, tmp_path):
    target = tmp_path / "ckpt.pth"
    with pytest.raises(SystemExit, match="checksum mismatch"):
        fetch_verified(url_of, "0" * 64, target)
    sha = hashlib.sha256(published.read_bytes()).hexdigest()
    fetch_verified(url_of, sha, target)
    published.unlink()
    unreachable = "http://127.0.0.1:9/nowhere"
    assert fetch_verified(unreachable, sha, target) == target, "already there and verified"
