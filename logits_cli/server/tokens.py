"""HMAC-signed tokens: blob download tokens (docs/protocol.md §6.1) and HS256 JWTs (§2.3).

Both are keyed from the server's signing secret; the JWT key is derived from it with a label,
so a value signed for one purpose can never verify for the other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logits_cli.errors import AuthError, BadSignatureError, ConfigError, UrlExpiredError

SECRET_FILE_NAME = "signing_secret"
_SECRET_BYTES = 32
_JWT_ISSUER = "logits"
_JWT_HEADER = {"alg": "HS256", "typ": "JWT"}
_BASE64URL_PART = re.compile(r"[A-Za-z0-9_-]+")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict: only the base64url alphabet, no padding; ValueError otherwise."""
    if not _BASE64URL_PART.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_or_create_secret(root: Path) -> bytes:
    """``<root>/signing_secret``: 32 random bytes, created once with mode 0600.

    The file appears with its whole content or not at all (written aside, then hard-linked
    into place), so a process starting at the same moment never reads a short secret: an
    empty HMAC key would let anyone forge download URLs and JWTs.
    """
    path = root / SECRET_FILE_NAME
    if not path.exists():
        fd, staging = tempfile.mkstemp(dir=root, prefix=f".{SECRET_FILE_NAME}.")
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it with mode 0600
                handle.write(secrets.token_bytes(_SECRET_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(staging, path)
        finally:
            os.unlink(staging)
    secret = path.read_bytes()
    if len(secret) < _SECRET_BYTES:
        raise ConfigError(f"{path} holds fewer than {_SECRET_BYTES} bytes; delete it to renew it")
    return secret


def _sign(key: bytes, message: str) -> str:
    return b64url_encode(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


def _signature_matches(key: bytes, message: str, signature: str) -> bool:
    return hmac.compare_digest(_sign(key, message), signature)


@dataclass(frozen=True)
class BlobClaim:
    """What a blob token grants: one archive (by digest) of one checkpoint until ``expires``."""

    run_id: str
    kind: str
    name: str
    sha256: str
    expires: int  # Unix seconds
    # One file of an external_weights export (docs/protocol.md §11.3), by its relative path;
    # None for a checkpoint archive. Archive tokens carry no "f", so they are unchanged.
    file: str | None = None


@dataclass(frozen=True)
class JwtClaims:
    subject: str  # the user id
    key_id: str | None  # the API key it was minted with (None: a token from before key ids)


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._blob_key = secret
        self._jwt_key = hmac.new(secret, b"logits-jwt-v1", hashlib.sha256).digest()

    # -- blob tokens (§6.1) ---------------------------------------------------------------
    def blob_token(self, claim: BlobClaim) -> str:
        fields: dict[str, Any] = {
            "d": claim.sha256,
            "e": claim.expires,
            "k": claim.kind,
            "n": claim.name,
            "r": claim.run_id,
            "v": 1,
        }
        if claim.file is not None:
            fields["f"] = claim.file
        payload = b64url_encode(canonical_json(fields))
        return f"{payload}.{_sign(self._blob_key, payload)}"

    def verify_blob_token(self, token: str, *, now: float | None = None) -> BlobClaim:
        """Checks 1 and 2 of §6.1: BadSignatureError, then UrlExpiredError."""
        invalid = BadSignatureError("download URL signature is invalid")
        payload, dot, signature = token.partition(".")
        if not dot or not _BASE64URL_PART.fullmatch(payload):
            raise invalid
        if not _BASE64URL_PART.fullmatch(signature) or not _signature_matches(
            self._blob_key, payload, signature
        ):
            raise invalid
        try:
            fields = json.loads(b64url_decode(payload))
            claim = BlobClaim(
                run_id=fields["r"],
                kind=fields["k"],
                name=fields["n"],
                sha256=fields["d"],
                expires=fields["e"],
                file=fields.get("f"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise invalid from exc
        types_ok = all(
            isinstance(v, str) for v in (claim.run_id, claim.kind, claim.name, claim.sha256)
        )
        if claim.file is not None and not isinstance(claim.file, str):
            raise invalid
        if fields.get("v") != 1 or not types_ok or type(claim.expires) is not int:
            raise invalid
        if (time.time() if now is None else now) > claim.expires:
            raise UrlExpiredError("download URL has expired; request a new one")
        return claim

    # -- JWTs (§2.3) ------------------------------------------------------------------------
    def issue_jwt(
        self, user_id: str, *, ttl: int, key_id: str | None = None, now: float | None = None
    ) -> str:
        """``key_id`` (claim ``kid``) names the API key it was minted with, so the server can
        refuse the JWT the moment that key is revoked."""
        issued = int(time.time() if now is None else now)
        header = b64url_encode(canonical_json(_JWT_HEADER))
        claims: dict[str, Any] = {
            "sub": user_id,
            # SDK 0.38's `whoami` decodes org_id (docs/protocol.md §11.4): one org per user.
            "org_id": user_id,
            "iat": issued,
            "exp": issued + ttl,
            "iss": _JWT_ISSUER,
        }
        if key_id is not None:
            claims["kid"] = key_id
        payload = b64url_encode(canonical_json(claims))
        signing_input = f"{header}.{payload}"
        return f"{signing_input}.{_sign(self._jwt_key, signing_input)}"

    def verify_jwt(self, token: str, *, now: float | None = None) -> str:
        """The ``sub`` of a valid, unexpired JWT signed by this server; AuthError otherwise."""
        return self.verify_jwt_claims(token, now=now).subject

    def verify_jwt_claims(self, token: str, *, now: float | None = None) -> JwtClaims:
        """The claims of a valid, unexpired JWT signed by this server; AuthError otherwise.
        The caller still checks that the key named by ``key_id`` is unrevoked."""
        invalid = AuthError("invalid or expired token")
        parts = token.split(".")
        if len(parts) != 3:
            raise invalid
        header, payload, signature = parts
        if not _BASE64URL_PART.fullmatch(header + payload + signature):
            raise invalid
        if not _signature_matches(self._jwt_key, f"{header}.{payload}", signature):
            raise invalid
        try:
            header_fields = json.loads(b64url_decode(header))
            claims = json.loads(b64url_decode(payload))
        except ValueError as exc:
            raise invalid from exc
        if not isinstance(header_fields, dict) or header_fields.get("alg") != "HS256":
            raise invalid
        if not isinstance(claims, dict) or claims.get("iss") != _JWT_ISSUER:
            raise invalid
        subject, expires, key_id = claims.get("sub"), claims.get("exp"), claims.get("kid")
        if not isinstance(subject, str) or type(expires) is not int:
            raise invalid
        if key_id is not None and not isinstance(key_id, str):
            raise invalid
        if (time.time() if now is None else now) >= expires:
            raise invalid
        return JwtClaims(subject=subject, key_id=key_id)
