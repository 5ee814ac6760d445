"""Rules of the wire protocol that the client, the server and the store each enforce,
defined here once: the TTL range (docs/protocol.md §5.6.6) and the access scopes of run
listings (§2.4). Imports nothing but ``errors``, so every layer may use it, the CLI's
start-up included.

The messages never echo the value: on the server it is whatever a client sent.
"""

from __future__ import annotations

from logits_cli.errors import UsageError

# Ten years. Also keeps every expiry time a datetime can hold.
MAX_TTL_SECONDS = 315_360_000
ACCESS_SCOPES = ("owned", "accessible")


def check_ttl(ttl_seconds: object) -> None:
    """None (no expiry) or an integer (not a bool) from 1 to ``MAX_TTL_SECONDS``; else
    ``UsageError`` (400 on the wire, exit 2)."""
    if ttl_seconds is None:
        return
    if type(ttl_seconds) is not int or not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise UsageError(
            f"ttl_seconds must be null or an integer from 1 to {MAX_TTL_SECONDS} seconds "
            "(ten years)"
        )


def check_access_scope(access_scope: object) -> str:
    """``access_scope`` when it is one of ``ACCESS_SCOPES``; else ``UsageError``."""
    if access_scope not in ACCESS_SCOPES:
        raise UsageError("access_scope must be 'owned' or 'accessible'")
    return str(access_scope)
