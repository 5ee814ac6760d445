"""Blob tokens and JWTs: exact formats, tampering, expiry, the signing secret file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from logits_cli.errors import AuthError, BadSignatureError, ConfigError, UrlExpiredError
from logits_cli.server.tokens import BlobClaim, Signer, b64url_decode, load_or_create_secret

SECRET = b"s" * 32
CLAIM = BlobClaim(run_id="r:train:0", kind="weights", name="n", sha256="ab" * 32, expires=2000)


def test_blob_token_is_the_documented_payload_and_hmac() -> None:
    token = Signer(SECRET).blob_token(CLAIM)
    payload, signature = token.split(".")
    expected_payload = (
        '{"d":"' + "ab" * 32 + '","e":2000,"k":"weights","n":"n","r":"r:train:0","v":1}'
    )
    assert b64url_decode(payload).decode() == expected_payload
    digest = hmac.new(SECRET, payload.encode(), hashlib.sha256).digest()
    assert signature == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert "=" not in token
    assert Signer(SECRET).verify_blob_token(token, now=2000) == CLAIM


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0],
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "%%%.%%%",
        lambda t: t.replace(".", ".."),
    ],
)
def test_tampered_blob_tokens_are_bad_signatures(mangle) -> None:
    token = Signer(SECRET).blob_token(CLAIM)
    with pytest.raises(BadSignatureError):
        Signer(SECRET).verify_blob_token(mangle(token), now=0)


def test_blob_token_signed_with_another_secret_is_bad() -> None:
    token = Signer(b"t" * 32).blob_token(CLAIM)
    with pytest.raises(BadSignatureError):
        Signer(SECRET).verify_blob_token(token, now=0)


def test_forged_payload_with_valid_signature_but_wrong_shape_is_bad() -> None:
    payload = base64.urlsafe_b64encode(b'{"v":2}').rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(
        hmac.new(SECRET, payload.encode(), hashlib.sha256).digest()
    ).rstrip(b"=")
    with pytest.raises(BadSignatureError):
        Signer(SECRET).verify_blob_token(f"{payload}.{signature.decode()}", now=0)


def test_expired_blob_token_is_url_expired_after_the_signature_check() -> None:
    token = Signer(SECRET).blob_token(CLAIM)
    with pytest.raises(UrlExpiredError):
        Signer(SECRET).verify_blob_token(token, now=2001)


def test_jwt_round_trip_and_claims() -> None:
    signer = Signer(SECRET)
    jwt = signer.issue_jwt("alice", ttl=60, now=1000)
    assert jwt.startswith("eyJ")
    header, payload, _ = jwt.split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(b64url_decode(payload)) == {
        "exp": 1060,
        "iat": 1000,
        "iss": "logits",
        "org_id": "alice",  # docs/protocol.md §11.4
        "sub": "alice",
    }
    assert signer.verify_jwt(jwt, now=1059) == "alice"
    with pytest.raises(AuthError):
        signer.verify_jwt(jwt, now=1060)
    with pytest.raises(AuthError):
        Signer(b"t" * 32).verify_jwt(jwt, now=1000)
    with pytest.raises(AuthError):
        signer.verify_jwt(jwt[:-3] + "abc", now=1000)


def test_a_blob_signature_never_verifies_as_a_jwt() -> None:
    signer = Signer(SECRET)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(
        b'{"exp":9999999999,"iat":0,"iss":"logits","sub":"alice"}'
    ).rstrip(b"=")
    forged_with_blob_key = hmac.new(SECRET, f"{header}.{body.decode()}".encode(), hashlib.sha256)
    signature = base64.urlsafe_b64encode(forged_with_blob_key.digest()).rstrip(b"=").decode()
    with pytest.raises(AuthError):
        signer.verify_jwt(f"{header}.{body.decode()}.{signature}", now=0)


def test_signing_secret_is_created_once_with_mode_0600(tmp_path) -> None:
    first = load_or_create_secret(tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / "signing_secret").stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == first


def test_signing_secret_is_never_read_half_written(tmp_path) -> None:
    """Processes starting together on a fresh home all get the same whole secret."""
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(tmp_path), range(32)))
    [secret] = secrets
    assert len(secret) == 32
    assert [entry.name for entry in tmp_path.iterdir()] == ["signing_secret"]


def test_a_short_signing_secret_file_is_refused(tmp_path) -> None:
    # An empty HMAC key would let anyone forge download URLs and JWTs.
    (tmp_path / "signing_secret").write_bytes(b"")
    with pytest.raises(ConfigError):
        load_or_create_secret(tmp_path)
