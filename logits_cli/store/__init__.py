"""The storage engine: SQLite metadata, content-addressed archive blobs, live run state.

This package is the contract between the reference server (``server/``) and the data. It
knows nothing about HTTP: it takes plain arguments, returns ``models.py`` objects, and raises
the classes of ``errors.py`` (NotFoundError for anything missing *or invisible to the
caller*, ConflictError subclasses, UsageError for bad arguments). It never imports
``server``, ``api`` or ``cli``.

Thread safety: one ``Store`` is shared by every request of a server; each method may be
called from any thread (the server runs them in a thread pool), and several processes may
open the same directory at once (WAL mode, busy timeout).
"""

from logits_cli.store.store import (
    LOCAL_USER,
    ApiKeyInfo,
    BlobInfo,
    FutureRecord,
    IdempotencyRecord,
    Store,
)

__all__ = ["LOCAL_USER", "ApiKeyInfo", "BlobInfo", "FutureRecord", "IdempotencyRecord", "Store"]
