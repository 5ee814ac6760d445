"""Run and checkpoint metadata of the SDK 0.38 dialect (docs/protocol.md §11.4): optimizer
configs per run, ``user_metadata`` per checkpoint, and listings that can leave out exports."""

from __future__ import annotations

import json
from typing import Any

from logits_cli import models
from logits_cli.errors import UsageError
from logits_cli.store.store import (
    _CKPT,
    _UNEXPIRED,
    Store,
    _checkpoint,
    _string_metadata,
)
from logits_cli.uri import EXTERNAL_KIND, CheckpointRef

OPTIMIZER_TYPES: dict[str, dict[str, Any]] = {
    "adamw": {"type": "adamw"},
    "dimuon": {"type": "dimuon", "version": 1},
}


# -- optimizer configs (§11.4) ------------------------------------------------------------


def optimizer_config(data: Any) -> dict[str, Any] | None:
    """The canonical config for a request's ``optimizer_config``; 400 for an unknown one."""
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise UsageError("optimizer_config must be an object with a string 'type'")
    known = OPTIMIZER_TYPES.get(data["type"])
    if known is None:
        raise UsageError(
            f"unknown optimizer type {data['type']!r}; this server offers "
            + ", ".join(sorted(OPTIMIZER_TYPES))
        )
    if data != known and {**known, **data} != known:
        raise UsageError(f"unsupported fields or version in optimizer_config {data!r}")
    return dict(known)


def set_run_optimizer(store: Store, run_id: str, config: dict[str, Any]) -> None:
    with store._db.write() as conn:
        conn.execute(
            "UPDATE runs SET optimizer_config = ? WHERE id = ?",
            (json.dumps(config, sort_keys=True), run_id),
        )


def run_optimizer(store: Store, run_id: str) -> dict[str, Any]:
    row = (
        store._db.connection()
        .execute("SELECT optimizer_config FROM runs WHERE id = ?", (run_id,))
        .fetchone()
    )
    if row is None or row[0] is None:
        return dict(OPTIMIZER_TYPES["adamw"])
    config: dict[str, Any] = json.loads(row[0])
    return config


# -- checkpoint metadata (§11.4) ------------------------------------------------------------


def set_checkpoint_metadata(
    store: Store, run_id: str, kind: str, name: str, metadata: dict[str, Any] | None
) -> None:
    if not metadata:
        return
    with store._db.write() as conn:
        row = conn.execute(
            "SELECT id FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?",
            (run_id, kind, name),
        ).fetchone()
        if row is not None:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoint_metadata (checkpoint_row, user_metadata)"
                " VALUES (?, ?)",
                (row[0], json.dumps(_string_metadata(metadata), sort_keys=True)),
            )


def annotate(store: Store, checkpoints: list[models.Checkpoint]) -> list[models.Checkpoint]:
    """Add stored ``user_metadata``; external rows report no archive digest (there is none)."""
    if not checkpoints:
        return checkpoints
    conn = store._db.connection()
    keys = [
        (c.tinker_path.partition("://")[2].split("/", 1)[0], c.kind, c.name) for c in checkpoints
    ]
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for run_id in {key[0] for key in keys}:
        rows = conn.execute(
            "SELECT c.kind, c.name, m.user_metadata FROM checkpoint_metadata m"
            " JOIN checkpoints c ON c.id = m.checkpoint_row WHERE c.run_id = ?",
            (run_id,),
        )
        for kind, name, text in rows:
            found[(run_id, kind, name)] = json.loads(text)
    result = []
    for key, checkpoint in zip(keys, checkpoints, strict=True):
        update: dict[str, Any] = {}
        if key in found:
            update["user_metadata"] = found[key]
        if checkpoint.kind == EXTERNAL_KIND:
            update["sha256"] = None
        result.append(checkpoint.model_copy(update=update) if update else checkpoint)
    return result


def list_user_checkpoints(
    store: Store, user_id: str, *, limit: int, offset: int, include_external: bool
) -> tuple[list[models.Checkpoint], int]:
    """``Store.list_user_checkpoints``, optionally without ``external_weights`` rows (for
    clients that cannot parse them, §11.3), paged over what is shown."""
    if include_external:
        return store.list_user_checkpoints(user_id, limit=limit, offset=offset)
    where = f"c.user_id = :user AND {_UNEXPIRED} AND c.kind != :external"
    params = {
        "user": user_id,
        "now": store._now_micros(),
        "limit": limit,
        "offset": offset,
        "external": EXTERNAL_KIND,
    }
    with store._db.read() as conn:
        total = conn.execute(f"SELECT count(*) FROM checkpoints c WHERE {where}", params).fetchone()
        rows = conn.execute(
            f"SELECT {_CKPT} FROM checkpoints c WHERE {where}"
            " ORDER BY c.time DESC, c.tinker_path LIMIT :limit OFFSET :offset",
            params,
        ).fetchall()
    return [_checkpoint(row) for row in rows], total[0]


def source_config(
    store: Store, viewer: str, source: str
) -> tuple[CheckpointRef, models.LoraConfig, str, dict[str, Any]]:
    """For create-via-load and copies: the visible source's kind, LoRA config, base model
    and optimizer config."""
    with store._db.read() as conn:
        ref, _, run = store._source_checkpoint(conn, viewer, source)
    lora = models.LoraConfig(
        rank=run.lora_rank,
        train_unembed=bool(run.train_unembed),
        train_mlp=bool(run.train_mlp),
        train_attn=bool(run.train_attn),
    )
    return ref, lora, run.base_model, run_optimizer(store, run.id)
