"""The signed blob endpoint (docs/protocol.md §6): headers, every Range form, tokens, content."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from datetime import datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest
from server_helpers import Api, assert_error

from logits_cli.server.tokens import BlobClaim, Signer

SECRET = b"module-server-secret"  # the module_server fixture's


@pytest.fixture(scope="module")
def archive(module_server):
    """One saved checkpoint on the module's server, and its blob URL."""
    api = Api(module_server, module_server.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "blob")
    checkpoint = api.checkpoint(model_id, "weights/blob")
    url = api.archive_url(model_id, "weights/blob")
    whole = httpx.get(url)
    assert whole.status_code == 200
    yield {
        "server": module_server,
        "api": api,
        "model_id": model_id,
        "checkpoint": checkpoint,
        "url": url,
        "whole": whole,
    }
    api.http.close()


def test_whole_archive_headers_digest_and_content(archive) -> None:
    checkpoint, whole = archive["checkpoint"], archive["whole"]
    data = whole.content
    digest = hashlib.sha256(data).hexdigest()
    assert digest == checkpoint["sha256"]
    assert len(data) == checkpoint["size_bytes"] and len(data) % 10240 == 0
    headers = whole.headers
    assert headers["content-type"] == "application/x-tar"
    assert headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"] == f'"sha256:{digest}"'
    assert headers["repr-digest"] == (
        "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"
    )
    created = datetime.fromisoformat(checkpoint["time"])
    assert parsedate_to_datetime(headers["last-modified"]) == created.replace(microsecond=0)
    assert headers["cache-control"] == "private, no-transform"
    assert "content-encoding" not in headers
    assert headers["content-disposition"] == (
        f'attachment; filename="{archive["model_id"]}_weights_blob.tar"'
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[-1] == "checkpoint_complete"
        assert names[:-1] == sorted(names[:-1])
        manifest = json.loads(tar.extractfile("checkpoint_complete").read())
        assert manifest["tinker_path"] == checkpoint["tinker_path"]
        assert (
            set(manifest["files"])
            == set(names[:-1])
            == {
                "adapter_config.json",
                "adapter_model.safetensors",
                "optimizer_state.safetensors",
            }
        )
        for name, expected in manifest["files"].items():
            content = tar.extractfile(name).read()
            assert hashlib.sha256(content).hexdigest() == expected["sha256"]
            assert len(content) == expected["size"]


def test_credential_headers_are_ignored(archive) -> None:
    response = httpx.get(archive["url"], headers={"X-API-Key": "tml-garbage"})
    assert response.status_code == 200 and response.content == archive["whole"].content


@pytest.mark.parametrize(
    "range_header,expected",
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, None)),
        ("bytes=-100", (-100, None)),
        ("bytes=10-10", (10, 10)),
        ("bytes=5-99999999999", (5, None)),  # clamped to the end
        ("bytes=-99999999999", (0, None)),  # a suffix longer than the file selects all of it
        ("BYTES=1-2", (1, 2)),
    ],
)
def test_single_ranges_are_206(archive, range_header: str, expected) -> None:
    data = archive["whole"].content
    size = len(data)
    first, last = expected
    if first < 0:
        first = size + first
    last = size - 1 if last is None else last
    response = httpx.get(archive["url"], headers={"Range": range_header})
    assert response.status_code == 206
    assert response.content == data[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert response.headers["content-length"] == str(last - first + 1)
    # Digest and validators describe the whole archive, on 206 too.
    for name in ("etag", "repr-digest", "last-modified", "content-type", "cache-control"):
        assert response.headers[name] == archive["whole"].headers[name]


@pytest.mark.parametrize("range_header", ["bytes=-0", "bytes={size}-", "bytes={size}-{more}"])
def test_unsatisfiable_ranges_are_416(archive, range_header: str) -> None:
    size = len(archive["whole"].content)
    header = range_header.format(size=size, more=size + 10)
    response = httpx.get(archive["url"], headers={"Range": header})
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-1,5-6",  # several ranges
        "bytes=5-1",  # last before first
        "items=0-5",  # another unit
        "bytes=abc",
        "bytes=-",
        "bytes",
        "",
    ],
)
def test_malformed_or_multiple_ranges_answer_the_whole_archive(archive, range_header: str) -> None:
    response = httpx.get(archive["url"], headers={"Range": range_header})
    assert response.status_code == 200
    assert response.content == archive["whole"].content
    assert "content-range" not in response.headers


def test_if_range(archive) -> None:
    whole = archive["whole"]
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for if_range in (etag, modified):
        response = httpx.get(archive["url"], headers={"Range": "bytes=0-9", "If-Range": if_range})
        assert response.status_code == 206 and response.content == whole.content[:10]
    for if_range in (
        '"sha256:' + "0" * 64 + '"',
        "W/" + etag,
        "Mon, 01 Jan 2001 00:00:00 GMT",
        "garbage",
    ):
        response = httpx.get(archive["url"], headers={"Range": "bytes=0-9", "If-Range": if_range})
        assert response.status_code == 200 and response.content == whole.content


def test_head_has_the_get_headers_and_no_body(archive) -> None:
    whole = archive["whole"]
    head = httpx.head(archive["url"])
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "repr-digest", "last-modified", "content-type", "content-length"):
        assert head.headers[name] == whole.headers[name]
    ranged = httpx.head(archive["url"], headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.headers["content-length"] == "10"


def _forge(archive, **changes) -> str:
    checkpoint = archive["checkpoint"]
    claim = {
        "run_id": archive["model_id"],
        "kind": "weights",
        "name": "blob",
        "sha256": checkpoint["sha256"],
        "expires": int(time.time()) + 600,
        **changes,
    }
    token = Signer(SECRET).blob_token(BlobClaim(**claim))
    return archive["url"].rsplit("/", 1)[0] + "/" + token


def test_token_checks_in_order(archive) -> None:
    assert httpx.get(_forge(archive)).status_code == 200
    expired = _forge(archive, expires=int(time.time()) - 10)
    assert_error(httpx.get(expired), 403, "url_expired")
    # A bad signature is reported before the expiry.
    tampered = expired[:-4] + ("AAAA" if not expired.endswith("AAAA") else "BBBB")
    assert_error(httpx.get(tampered), 403, "bad_signature")
    assert_error(httpx.get(archive["url"] + "x"), 403, "bad_signature")
    assert_error(httpx.get(archive["url"].rsplit("/", 1)[0] + "/nodot"), 403, "bad_signature")
    # Valid signatures for what does not exist (or no longer matches) are 404.
    assert_error(httpx.get(_forge(archive, name="other")), 404, "not_found")
    assert_error(httpx.get(_forge(archive, sha256="0" * 64)), 404, "not_found")


def test_overwritten_checkpoint_invalidates_old_urls(archive) -> None:
    api, model_id = archive["api"], archive["model_id"]
    api.save(model_id, "replaced")
    old_url = api.archive_url(model_id, "weights/replaced")
    api.save(model_id, "replaced", overwrite=True)
    assert_error(httpx.get(old_url), 404, "not_found")
    fresh = api.archive_url(model_id, "weights/replaced")
    assert httpx.get(fresh).status_code == 200


def test_url_expires_after_download_url_ttl(server_factory) -> None:
    server = server_factory(download_url_ttl=1)
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "short")
    url = api.archive_url(model_id, "weights/short")
    response = httpx.get(url)
    while response.status_code == 200:  # valid until its second has passed
        response = httpx.get(url)
    assert_error(response, 403, "url_expired")


def test_public_checkpoint_url_works_for_others_without_credentials(archive) -> None:
    api, model_id = archive["api"], archive["model_id"]
    bob = Api(archive["server"], archive["server"].api_key("bob"))
    api.save(model_id, "shared", sampler=True)
    path = f"/api/v1/training_runs/{model_id}/checkpoints/sampler_weights/shared"
    assert api.post(f"{path}/publish").status_code == 204
    url = bob.archive_url(model_id, "sampler_weights/shared")
    assert (
        httpx.get(url).content
        == httpx.get(api.archive_url(model_id, "sampler_weights/shared")).content
    )
    bob.http.close()
