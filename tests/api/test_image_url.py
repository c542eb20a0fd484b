"""Photos by address (image_url), as shops send them and as attackers would: a loopback HTTP
server of the test's own serves photos, slow answers, redirects to internal addresses,
endless bodies and HTML; gs:// objects come from the GCS emulator. Only loopback is ever
contacted: every internal address is refused before any connection."""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api import create_app
from shared.settings import DEFAULT_MAX_UPLOAD_BYTES
from tests.helpers import image_bytes, sample_variant, submit, wait_finished
from tests.shared.test_outbound import INTERNAL_TARGETS, MALFORMED_TARGETS

#: Short enough to keep the slow cases quick, long enough for a loopback photo.
FETCH_TIMEOUT_S = 1.5
PHOTO = image_bytes(96, 72, "JPEG")
HTML = b"<!doctype html><html><body>not a photo</body></html>"
#: A body well past the upload cap (20 MB): 60 MB, as a misbehaving server would send it.
HUGE_BYTES = 60 * 1024 * 1024


class PhotoServer(http.server.ThreadingHTTPServer):
    """Serves what the paths say; remembers every path it was asked for."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PhotoHandler)
        self.hits: list[str] = []
        #: A photo no cache has seen.
        self.unique = sample_variant()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class PhotoHandler(http.server.BaseHTTPRequestHandler):
    server: PhotoServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.path.split("?")[0]
        handler = getattr(self, "serve_" + route.strip("/").split("/")[0].replace("-", "_"))
        handler()

    def answer(self, status: int, body: bytes, content_type: str = "image/jpeg") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def serve_photo(self) -> None:
        self.answer(200, PHOTO)

    def serve_unique(self) -> None:
        self.answer(200, self.server.unique, "image/png")

    def serve_photo_as_text(self) -> None:
        self.answer(200, PHOTO, "text/plain")

    def serve_html(self) -> None:
        self.answer(200, HTML, "image/jpeg")

    def serve_missing(self) -> None:
        self.answer(404, b"gone", "text/plain")

    def serve_slow(self) -> None:
        time.sleep(FETCH_TIMEOUT_S * 2)
        self.answer(200, PHOTO)

    def serve_drip(self) -> None:
        """Headers at once, then a byte now and then: each read is quick, the whole is not."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        try:
            for byte in PHOTO[:40]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def serve_endless(self) -> None:
        """No length, no end: bytes until the client hangs up."""
        self.send_response(200)
        self.end_headers()
        chunk = b"\xff" * (1024 * 1024)
        try:
            for _ in range(HUGE_BYTES // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass

    def serve_declared_huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(HUGE_BYTES))
        self.end_headers()

    def serve_to_photo(self) -> None:
        self.redirect("/photo")

    def serve_to_metadata(self) -> None:
        self.redirect("http://169.254.169.254/latest/meta-data/")

    def serve_to_private(self) -> None:
        self.redirect("http://10.0.0.1/photo")

    def serve_to_file(self) -> None:
        self.redirect("file:///etc/passwd")

    def serve_loop(self) -> None:
        self.redirect(self.path)


@pytest.fixture
def photos() -> Iterator[PhotoServer]:
    server = PhotoServer()
    yield server
    server.shutdown()


def app_with(settings, **overrides: Any):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": settings.with_overrides(**overrides)})


@pytest.fixture
def fetching(settings):
    """The API in development with loopback fetches allowed (the test's server is local)."""
    return app_with(
        settings, fetch_allow_loopback=True, fetch_timeout_s=FETCH_TIMEOUT_S
    ).test_client()


@pytest.fixture
def strict(settings):
    """The API as production fetches: loopback refused like every internal address."""
    return app_with(settings, fetch_timeout_s=FETCH_TIMEOUT_S).test_client()


def by_url(client, url: str, **form: str):
    return client.post(
        "/v1/jobs", data={"image_url": url, **form}, content_type="multipart/form-data"
    )


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_a_photo_by_url_is_queued_like_an_upload(fetching, photos):
    response = by_url(fetching, photos.url("/photo?sig=secret"), effects="color")
    assert response.status_code == 202, response.get_json()
    job = fetching.get(response.headers["Location"]).get_json()
    assert (job["input"]["width"], job["input"]["height"]) == (96, 72)
    assert "fetch;dur=" in response.headers["Server-Timing"]


def test_json_bodies_take_the_same_fields(fetching, photos):
    response = fetching.post(
        "/v1/jobs",
        json={
            "image_url": photos.url("/photo"),
            "effects": ["color", "popart"],
            "params": {"popart": {"levels": 4}},
            "crop": True,
            "quality": 80,
        },
    )
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["effects"] == ["color", "popart"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"image": "abc"}, (422, "invalid_parameter")),
        ({"effects": "color"}, (400, "malformed_request")),
        ({"image_url": {"nested": 1}}, (422, "invalid_parameter")),
        (["not", "an", "object"], (400, "malformed_request")),
    ],
)
def test_bad_json_bodies_are_named(fetching, body, expected):
    assert error_of(fetching.post("/v1/jobs", json=body)) == expected


def test_a_body_that_is_not_json_is_a_400(fetching):
    response = fetching.post("/v1/jobs", data=b"{", content_type="application/json")
    assert error_of(response) == (400, "malformed_request")


def test_a_photo_and_an_address_together_are_refused(fetching, photos):
    response = submit(fetching, PHOTO, image_url=photos.url("/photo"))
    assert error_of(response) == (422, "invalid_parameter")
    assert response.get_json()["error"]["field"] == "image_url"
    assert photos.hits == [], "refused before fetching"


def test_neither_a_photo_nor_an_address_is_a_400(fetching):
    response = fetching.post("/v1/jobs", data={"effects": "color"})
    assert error_of(response) == (400, "malformed_request")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/photo_as_text", (202, None)),
        ("/to-photo", (202, None)),
        ("/html", (415, "unsupported_media_type")),
        ("/missing", (422, "fetch_failed")),
        ("/loop", (422, "fetch_failed")),
        ("/slow", (422, "fetch_timeout")),
        ("/drip", (422, "fetch_timeout")),
        ("/endless", (413, "fetch_too_large")),
        ("/declared-huge", (413, "fetch_too_large")),
        ("/to-metadata", (422, "fetch_refused")),
        ("/to-private", (422, "fetch_refused")),
        ("/to-file", (422, "fetch_refused")),
    ],
)
def test_each_kind_of_answer_gets_its_named_error(fetching, photos, path, expected):
    started = time.monotonic()
    response = by_url(fetching, photos.url(path), effects="color")
    took = time.monotonic() - started
    status, code = expected
    assert response.status_code == status, response.get_json()
    if code is not None:
        assert response.get_json()["error"]["code"] == code
        assert response.get_json()["error"]["field"] == "image_url"
    assert took < FETCH_TIMEOUT_S + 3, f"{path} held the submit {took:.1f} s"


def test_redirects_are_followed_at_most_three_times(fetching, photos):
    by_url(fetching, photos.url("/loop"))
    assert photos.hits.count("/loop") == 4, "the first request and three redirects"


def test_a_huge_body_is_cut_at_the_cap_not_read_to_its_end(fetching, photos):
    started = time.monotonic()
    response = by_url(fetching, photos.url("/endless"))
    assert error_of(response) == (413, "fetch_too_large")
    assert DEFAULT_MAX_UPLOAD_BYTES < HUGE_BYTES
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("url", INTERNAL_TARGETS)
def test_internal_addresses_are_refused_before_any_connection(strict, url):
    assert error_of(by_url(strict, url)) == (422, "fetch_refused")


def test_in_production_the_tests_own_loopback_server_never_sees_a_request(strict, photos):
    for path in ("/photo", "/to-photo"):
        assert error_of(by_url(strict, photos.url(path))) == (422, "fetch_refused")
    localhost = photos.url("/photo").replace("127.0.0.1", "localhost")
    assert error_of(by_url(strict, localhost)) == (422, "fetch_refused")
    assert photos.hits == []


@pytest.mark.parametrize("url", [u for u in MALFORMED_TARGETS if not u.startswith("ftp")])
def test_malformed_addresses_are_a_422_naming_the_field(strict, url):
    response = by_url(strict, url)
    assert response.status_code == 422, url
    assert response.get_json()["error"]["field"] == "image_url"


def test_the_log_shows_the_address_without_its_query(fetching, photos, caplog):
    caplog.set_level("INFO", logger="api.upload")
    by_url(fetching, photos.url("/photo?token=s3cret"))
    fetched = [r for r in caplog.records if r.getMessage() == "photo fetched"]
    assert fetched
    assert fetched[0].url == photos.url("/photo")  # type: ignore[attr-defined]
    assert "s3cret" not in caplog.text


def test_the_same_bytes_by_address_and_by_upload_are_one_idempotent_request(fetching, photos):
    key = {"Idempotency-Key": "order-1"}
    first = fetching.post(
        "/v1/jobs",
        data={"image_url": photos.url("/photo"), "effects": "color"},
        headers=key,
    )
    again = fetching.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(PHOTO), "p.jpg"), "effects": "color"},
        headers=key,
        content_type="multipart/form-data",
    )
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"


# --- bucket objects ----------------------------------------------------------------------


@pytest.fixture
def bucket_photo(gcs_environment) -> str:
    from google.cloud import storage

    from tests.gcs import BUCKET

    client = storage.Client(project="cutfx", credentials=_anonymous())
    client.bucket(BUCKET).blob("shop/pets/rex.jpg").upload_from_string(PHOTO)
    return f"gs://{BUCKET}/shop/pets/rex.jpg"


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def test_an_object_of_a_listed_bucket_is_read(settings, bucket_photo):
    from tests.gcs import BUCKET

    client = app_with(settings, input_buckets=(BUCKET,)).test_client()
    response = by_url(client, bucket_photo, effects="color")
    assert response.status_code == 202, response.get_json()
    missing = by_url(client, bucket_photo.replace("rex", "nobody"))
    assert error_of(missing) == (422, "fetch_failed")


def test_any_other_bucket_is_a_403_before_any_request(settings, bucket_photo):
    client = app_with(settings, input_buckets=("someone-elses",)).test_client()
    response = by_url(client, bucket_photo)
    assert error_of(response) == (403, "bucket_not_allowed")
    assert error_of(by_url(client, "gs://someone-elses")) == (422, "invalid_parameter")


# --- the same photo, the same cache: real workers --------------------------------------------


@pytest.mark.e2e
def test_a_photo_by_address_and_its_upload_share_the_cache(workers, e2e_settings, photos):
    client = app_with(e2e_settings, fetch_allow_loopback=True).test_client()
    by_address = by_url(client, photos.url("/unique"), effects="color").get_json()
    first = wait_finished(client, by_address["id"])
    assert first["status"] == "succeeded"
    assert first["results"]["color"]["cached"] is False
    uploaded = submit(client, photos.unique, effects="color").get_json()
    assert uploaded["status"] == "succeeded", "answered from the cache at once"
    assert uploaded["results"]["color"]["cached"] is True
    assert uploaded["results"]["cutout"]["cached"] is True
