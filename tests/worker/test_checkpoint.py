"""Fetching a checkpoint: verified by digest before it is moved in place, never half-written."""

from __future__ import annotations

import hashlib

import pytest

from worker.bake import fetch_verified
from worker.checkpoint import ChecksumMismatch, download_verified, file_digest, has_digest


@pytest.fixture
def published(tmp_path):
    source = tmp_path / "release.pth"
    source.write_bytes(b"weights" * 1000)
    return source


def test_a_download_with_the_right_digest_lands(published, tmp_path):
    sha = hashlib.sha256(published.read_bytes()).hexdigest()
    target = tmp_path / "models" / "ckpt.pth"
    assert download_verified(published.as_uri(), target, "sha256", sha, 5) == target
    assert target.read_bytes() == published.read_bytes()
    assert file_digest(target, "md5") == hashlib.md5(published.read_bytes()).hexdigest()
    assert has_digest(target, "sha256", sha)


def test_a_wrong_digest_leaves_nothing_behind(published, tmp_path):
    target = tmp_path / "ckpt.pth"
    with pytest.raises(ChecksumMismatch):
        download_verified(published.as_uri(), target, "sha256", "0" * 64, 5)
    assert list(tmp_path.iterdir()) == [published]


def test_bake_refuses_a_mismatch_and_reuses_a_verified_file(published, tmp_path):
    target = tmp_path / "ckpt.pth"
    with pytest.raises(SystemExit, match="checksum mismatch"):
        fetch_verified(published.as_uri(), "0" * 64, target)
    sha = hashlib.sha256(published.read_bytes()).hexdigest()
    fetch_verified(published.as_uri(), sha, target)
    published.unlink()
    assert fetch_verified("file:///nowhere", sha, target) == target, "already there and verified"
