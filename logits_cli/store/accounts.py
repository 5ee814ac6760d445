"""Users, API keys (only their SHA-256 is kept) and the sessions rows (docs/protocol.md §2.1, §5.1).

The SDK 0.38 session operations (finish, list, search) live in ``sessions.py``.
"""

from __future__ import annotations

import hmac
import json
import secrets
import uuid
from typing import Any

from logits_cli.errors import NotFoundError, UsageError
from logits_cli.store.core import StoreCore
from logits_cli.store.rows import (
    _BLOB_NAME_RE,
    _USER_ID_RE,
    KEY_PREFIX,
    KEY_PREFIX_SHOWN,
    MIN_REVOKE_PREFIX,
    ApiKeyInfo,
    _from_micros,
    _sha256_hex,
)


class AccountsMixin(StoreCore):
    """Users, API keys and session rows."""

    # -- users and API keys (§2.1) --------------------------------------------------------
    def create_api_key(self, user_id: str) -> str:
        """New ``tml-`` + 43 base64url chars key; only its SHA-256 is stored. UsageError on a
        user id outside ``[a-z0-9_-]{1,64}``."""
        if not isinstance(user_id, str) or not _USER_ID_RE.fullmatch(user_id):
            raise UsageError(f"user id {user_id!r} must match [a-z0-9_-]{{1,64}}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._now_micros()
        with self._db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO users (id, created) VALUES (?, ?)", (user_id, now))
            conn.execute(
                "INSERT INTO api_keys (key_sha256, prefix, user_id, created) VALUES (?, ?, ?, ?)",
                (_sha256_hex(key), key[:KEY_PREFIX_SHOWN], user_id, now),
            )
        return key

    def shared_signing_secret(self) -> bytes | None:
        """On PostgreSQL, the signing secret every process of the team server shares: made
        by the first to ask, the same for all after. None on SQLite (one machine: the
        secret is a file under the store directory, server/tokens.py)."""
        if self.database is None:
            return None
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO server_secrets (name, value) VALUES ('signing', ?)",
                (secrets.token_bytes(32),),
            )
            row = conn.execute("SELECT value FROM server_secrets WHERE name = 'signing'").fetchone()
        return bytes(row[0])

    def list_api_keys(self) -> list[ApiKeyInfo]:
        rows = self._db.connection().execute(
            "SELECT prefix, user_id, created, revoked FROM api_keys ORDER BY created, prefix"
        )
        return [
            ApiKeyInfo(prefix, user_id, _from_micros(created), revoked is not None)
            for prefix, user_id, created, revoked in rows
        ]

    def revoke_api_key(self, prefix: str) -> int:
        """Revoke every key starting with ``prefix`` (at least 8 chars); returns how many.
        NotFoundError when none matches."""
        if len(prefix) < MIN_REVOKE_PREFIX:
            raise UsageError(f"key prefix must have at least {MIN_REVOKE_PREFIX} characters")
        shown = prefix[:KEY_PREFIX_SHOWN]
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT key_sha256, revoked FROM api_keys WHERE substr(prefix, 1, ?) = ?",
                (len(shown), shown),
            ).fetchall()
            if len(prefix) > KEY_PREFIX_SHOWN:
                # Longer than the stored prefix: only the whole key can match, by its hash.
                wanted = _sha256_hex(prefix)
                rows = [row for row in rows if hmac.compare_digest(row[0], wanted)]
            if not rows:
                raise NotFoundError(f"no API key starts with {shown!r}")
            now = self._now_micros()
            fresh = [(now, key_hash) for key_hash, revoked in rows if revoked is None]
            conn.executemany("UPDATE api_keys SET revoked = ? WHERE key_sha256 = ?", fresh)
        return len(fresh)

    def authenticate(self, key: str) -> str | None:
        """The user id of a valid, unrevoked key, else None (constant-time compare)."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            return None
        key_hash = _sha256_hex(key)
        row = (
            self._db.connection()
            .execute(
                "SELECT key_sha256, user_id FROM api_keys WHERE key_sha256 = ? AND revoked IS NULL",
                (key_hash,),
            )
            .fetchone()
        )
        if row is None or not hmac.compare_digest(row[0], key_hash):
            return None
        return str(row[1])

    @staticmethod
    def key_id(key: str) -> str:
        """The id of an API key: the SHA-256 the store keeps, which reveals nothing of it."""
        return _sha256_hex(key)

    def user_for_key_id(self, key_id: str | None) -> str | None:
        """The user of an unrevoked key, by id (a JWT's ``kid``), else None."""
        if not isinstance(key_id, str) or not _BLOB_NAME_RE.fullmatch(key_id):
            return None
        row = (
            self._db.connection()
            .execute(
                "SELECT user_id FROM api_keys WHERE key_sha256 = ? AND revoked IS NULL", (key_id,)
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    # -- sessions (§5.1) ------------------------------------------------------------------
    def create_session(
        self,
        user_id: str,
        *,
        tags: list[str],
        user_metadata: dict[str, Any] | None,
        sdk_version: str,
        project_id: str | None,
    ) -> str:
        """Returns a new lowercase UUID4 session id."""
        session_id = str(uuid.uuid4())
        now = self._now_micros()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO sessions (id, user_id, tags, user_metadata, sdk_version, project_id,"
                " created, last_heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    user_id,
                    json.dumps(tags),
                    None if user_metadata is None else json.dumps(user_metadata),
                    sdk_version,
                    project_id,
                    now,
                    now,
                ),
            )
        return session_id

    def heartbeat(self, user_id: str, session_id: str) -> None:
        """NotFoundError if unknown or not the caller's."""
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE sessions SET last_heartbeat = ? WHERE id = ? AND user_id = ?",
                (self._now_micros(), session_id, user_id),
            ).rowcount
        if not updated:
            raise NotFoundError(f"session {session_id} not found")
