"""Sessions and sampling sessions of the SDK 0.38 dialect (docs/protocol.md §11.1, §11.5).

Helpers over a ``Store``'s own database and clock, kept out of ``store.py`` so that module
only grows where it must. A finished session stays readable (get, list, search) but refuses
heartbeats (410) and new models or sampling sessions (410).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from logits_cli import models
from logits_cli.errors import GoneError, NotFoundError, UsageError
from logits_cli.store.store import Store, _from_micros, _sha256_hex, _string_metadata, _to_micros
from logits_cli.uri import CheckpointRef
from logits_cli.utc_text import utc_text

FINISH_REASONS = ("success", "errored", "interrupted")
STATUS_TYPES = ("active", "cancelled", "failed", "client_finished")
SEARCH_LIMIT = (50, 200)  # (default, maximum) page size of sessions/search
DEFAULT_PROJECT = "default"  # sessions created without a project_id


def _session_row(store: Store, user_id: str, session_id: str) -> tuple[Any, ...]:
    row = (
        store._db.connection()
        .execute(
            "SELECT id, created, finished, finish_reason, finish_detail, user_metadata,"
            " project_id FROM sessions WHERE id = ? AND user_id = ?",
            (session_id, user_id),
        )
        .fetchone()
    )
    if row is None:
        raise NotFoundError(f"session {session_id} not found")
    return tuple(row)


def require_open_session(store: Store, user_id: str, session_id: str) -> None:
    """NotFoundError for an unknown or foreign session, GoneError for a finished one."""
    if _session_row(store, user_id, session_id)[2] is not None:
        raise GoneError(f"session {session_id} is finished; create a new session")


def heartbeat(store: Store, user_id: str, session_id: str) -> None:
    """Record a heartbeat; 404 unknown, 410 once the session is finished (§11.1)."""
    require_open_session(store, user_id, session_id)
    store.heartbeat(user_id, session_id)


def finish_session(
    store: Store, user_id: str, session_id: str, reason: str, detail: str | None
) -> None:
    """Mark the session finished. Idempotent: a second finish keeps the first outcome."""
    if reason not in FINISH_REASONS:
        raise UsageError(f"reason.type must be one of {', '.join(FINISH_REASONS)}")
    with store._db.write() as conn:
        row = conn.execute(
            "SELECT finished FROM sessions WHERE id = ? AND user_id = ?", (session_id, user_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"session {session_id} not found")
        if row[0] is None:
            conn.execute(
                "UPDATE sessions SET finished = ?, finish_reason = ?, finish_detail = ?"
                " WHERE id = ?",
                (store._now_micros(), reason, detail, session_id),
            )


def list_sessions(store: Store, user_id: str, *, limit: int, offset: int) -> list[str]:
    rows = store._db.connection().execute(
        "SELECT id FROM sessions WHERE user_id = ? ORDER BY created DESC, id LIMIT ? OFFSET ?",
        (user_id, limit, offset),
    )
    return [row[0] for row in rows]


def _metadata(text: str | None) -> dict[str, str] | None:
    return None if text is None else _string_metadata(json.loads(text))


def get_session(store: Store, user_id: str, session_id: str) -> models.GetSessionResponse:
    row = _session_row(store, user_id, session_id)
    conn = store._db.connection()
    runs = conn.execute(
        "SELECT id FROM runs WHERE session_id = ? ORDER BY model_seq_id", (session_id,)
    )
    samplers = conn.execute(
        "SELECT id FROM sampling_sessions WHERE session_id = ? ORDER BY seq_id", (session_id,)
    )
    return models.GetSessionResponse(
        training_run_ids=[r[0] for r in runs],
        sampler_ids=[s[0] for s in samplers],
        user_metadata=_metadata(row[5]),
        display_name=None,
    )


def _status(finished: int | None, reason: str | None, detail: str | None) -> dict[str, Any]:
    if finished is None:
        return {"type": "active"}
    return {"type": "client_finished", "reason": {"type": reason}, "detail": detail}


def _status_matches(status: dict[str, Any], queries: list[dict[str, Any]] | None) -> bool:
    if queries is None:
        return True
    for query in queries:
        if query.get("type") != status["type"]:
            continue
        reasons = query.get("reasons")
        if status["type"] == "client_finished" and reasons:
            if status["reason"]["type"] in reasons:
                return True
            continue
        return True
    return False


def search_sessions(
    store: Store,
    user_id: str,
    *,
    session_id: str | None,
    project_ids: list[str] | None,
    user_metadata: dict[str, str],
    statuses: list[dict[str, Any]] | None,
    limit: int,
    cursor: tuple[datetime, str] | None,
) -> models.SessionSearchResponse:
    """The caller's sessions matching every filter, newest first, one page at a time."""
    conn = store._db.connection()
    sql = (
        "SELECT s.id, s.created, s.finished, s.finish_reason, s.finish_detail, s.user_metadata,"
        " s.project_id FROM sessions s WHERE s.user_id = :user"
    )
    params: dict[str, Any] = {"user": user_id}
    if session_id is not None:
        sql += " AND s.id = :session"
        params["session"] = session_id
    if cursor is not None:
        sql += " AND (s.created < :at OR (s.created = :at AND s.id > :after))"
        params.update(at=_to_micros(cursor[0]), after=cursor[1])
    sql += " ORDER BY s.created DESC, s.id"
    found: list[models.SessionSummary] = []
    more = False
    now = store._now_micros()
    for row in conn.execute(sql, params):
        sid, created, finished, reason, detail, metadata_text, project = row
        project = project or DEFAULT_PROJECT
        metadata = _metadata(metadata_text) or {}
        status = _status(finished, reason, detail)
        if project_ids is not None and project not in project_ids:
            continue
        if any(metadata.get(key) != value for key, value in user_metadata.items()):
            continue
        if not _status_matches(status, statuses):
            continue
        if len(found) == limit:
            more = True
            break
        count, size = conn.execute(
            "SELECT count(*), coalesce(sum(c.size_bytes), 0) FROM checkpoints c"
            " JOIN runs r ON r.id = c.run_id WHERE r.session_id = ?"
            " AND (c.expires_at IS NULL OR c.expires_at > ?)",
            (sid, now),
        ).fetchone()
        found.append(
            models.SessionSummary(
                session_id=sid,
                created_at=_from_micros(created),
                owner=user_id,
                project_id=project,
                status=status,
                checkpoints_count=count,
                user_metadata=metadata or None,
                checkpoint_storage_bytes=size,
            )
        )
    next_cursor = None
    if more and found:
        last = found[-1]
        next_cursor = {
            "last_created_at": utc_text(last.created_at),
            "last_session_id": last.session_id,
        }
    return models.SessionSearchResponse(sessions=found, next_cursor=next_cursor)


# -- sampling sessions (§11.5) ------------------------------------------------------------


def _record_sampler(
    store: Store,
    user_id: str,
    *,
    session_id: str,
    seq_id: int,
    base_model: str,
    model_path: str | None,
    run_id: str | None,
) -> str:
    """Insert ``<session>:sample:<seq>``; the same request again returns the same id."""
    if seq_id < 0:
        raise UsageError("sampling_session_seq_id must be >= 0")
    sampler_id = f"{session_id}:sample:{seq_id}"
    body = _sha256_hex(json.dumps([base_model, model_path, run_id]))
    with store._db.write() as conn:
        row = conn.execute(
            "SELECT body_sha256 FROM sampling_sessions WHERE id = ?", (sampler_id,)
        ).fetchone()
        if row is not None:
            if row[0] != body:
                raise UsageError(f"sampling session {sampler_id} already exists with another model")
            return sampler_id
        conn.execute(
            "INSERT INTO sampling_sessions (id, user_id, session_id, seq_id, base_model,"
            " model_path, run_id, body_sha256, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sampler_id,
                user_id,
                session_id,
                seq_id,
                base_model,
                model_path,
                run_id,
                body,
                store._now_micros(),
            ),
        )
    return sampler_id


def create_sampling_session(
    store: Store,
    user_id: str,
    *,
    session_id: str,
    seq_id: int,
    base_model: str | None,
    model_path: str | None,
) -> str:
    """Validate the checkpoint (visible, sampler or training) or the base model, then record
    the sampling session. The server runs no model, so nothing is loaded."""
    from logits_cli.store.lora import shape_for

    require_open_session(store, user_id, session_id)
    if model_path is not None:
        ref = CheckpointRef.parse(model_path)
        if ref.kind not in ("weights", "sampler_weights"):
            raise UsageError(f"{model_path} is not a sampler or training checkpoint")
        with store._db.read() as conn:
            _, _, run = store._source_checkpoint(conn, user_id, model_path)
        if base_model is not None and base_model != run.base_model:
            raise UsageError(
                f"checkpoint {model_path} is for base model {run.base_model}, not {base_model}"
            )
        return _record_sampler(
            store,
            user_id,
            session_id=session_id,
            seq_id=seq_id,
            base_model=run.base_model,
            model_path=str(ref),
            run_id=ref.run_id,
        )
    if base_model is None:
        raise UsageError("give model_path or base_model")
    if shape_for(base_model) is None:
        raise NotFoundError(f"base model {base_model!r} is not supported by this server")
    return _record_sampler(
        store,
        user_id,
        session_id=session_id,
        seq_id=seq_id,
        base_model=base_model,
        model_path=None,
        run_id=None,
    )


def ephemeral_sampler(store: Store, user_id: str, run_id: str, seq_id: int) -> str:
    """The unnamed, unlisted sampler save of ``save_weights_and_get_sampling_client``: a
    sampling session bound to the run (in the run's own session)."""
    with store._db.read() as conn:
        run = store._owned_run(conn, user_id, run_id)
        session_id = conn.execute("SELECT session_id FROM runs WHERE id = ?", (run_id,)).fetchone()[
            0
        ]
    require_open_session(store, user_id, session_id)
    return _record_sampler(
        store,
        user_id,
        session_id=session_id,
        seq_id=seq_id,
        base_model=run.base_model,
        model_path=None,
        run_id=run_id,
    )


def get_sampler(store: Store, user_id: str, sampler_id: str) -> models.GetSamplerResponse:
    row = (
        store._db.connection()
        .execute(
            "SELECT base_model, model_path FROM sampling_sessions WHERE id = ? AND user_id = ?",
            (sampler_id, user_id),
        )
        .fetchone()
    )
    if row is None:
        raise NotFoundError(f"sampling session {sampler_id} not found")
    return models.GetSamplerResponse(sampler_id=sampler_id, base_model=row[0], model_path=row[1])
