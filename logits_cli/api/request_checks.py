"""Small rules the client applies before a request and to its answers: argument checks
(scope, TTL, kinds), checkpoint endpoint paths, paging, ``@latest``, redirect headers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from logits_cli import models
from logits_cli.errors import NotFoundError, UsageError
from logits_cli.protocol_rules import check_access_scope
from logits_cli.protocol_rules import check_ttl as check_ttl  # the client's TTL check
from logits_cli.uri import CheckpointRef, validate_run_id

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_BLOB_REDIRECTS = 5
ARCHIVE_URL_DEFAULT_LIFETIME = timedelta(minutes=15)


def scope(access_scope: str) -> str:
    """The ``access_scope`` query parameter, checked by the protocol's rule."""
    return check_access_scope(access_scope)


def last_page(count: int, offset: int, cursor: models.Cursor | None, page_size: int) -> bool:
    """Stop at ``total_count`` or on a short page (§5.5, §5.6.2)."""
    if count == 0 or cursor is None:
        return True
    if offset >= cursor.total_count:
        return True
    return cursor.limit > 0 and count < min(cursor.limit, page_size)


def newest(checkpoints: list[models.Checkpoint], ref: CheckpointRef) -> models.Checkpoint:
    """The newest of ``ref.kind`` by ``time``; the listing's order breaks ties."""
    of_kind = [c for c in checkpoints if c.kind == ref.kind]
    if not of_kind:
        raise NotFoundError(f"no {ref.kind} checkpoints in run {ref.run_id}")
    return max(of_kind, key=lambda c: c.time)


def require_known_kind(ref: CheckpointRef, operation: str, kinds: tuple[str, ...]) -> None:
    """Kinds a deployment lists but this operation cannot act on are refused before any
    request; unknown kinds parse and list, but nothing else (docs/protocol.md §11)."""
    if ref.kind not in kinds:
        raise UsageError(
            f"cannot {operation} {ref}: checkpoints of kind {ref.kind!r} are not supported "
            f"here; only {', '.join(kinds)} are"
        )


def checkpoint_endpoint(ref: CheckpointRef) -> str:
    return f"training_runs/{validate_run_id(ref.run_id)}/checkpoints/{ref.kind}/{ref.name}"


def expires_header(value: str | None) -> datetime:
    """The ``Expires`` of a 302 archive answer; 15 minutes from now when absent or unreadable."""
    if value:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return datetime.now(UTC) + ARCHIVE_URL_DEFAULT_LIFETIME
