"""Sizes, intervals and formats the engine is tuned with (docs/protocol.md §6.3)."""

from __future__ import annotations

MiB = 1024 * 1024
MIN_SEGMENT = 8 * MiB
MAX_SEGMENT = 64 * MiB
# httpx.ASGITransport collects each response body in memory, so the embedded backend gets
# small bounded ranges: memory stays at connections × this.
EMBEDDED_SEGMENT = 4 * MiB
# The hasher follows the contiguous prefix, which the last segments of all connections
# complete together: smaller segments leave less to hash after the last byte arrives.
SEGMENTS_PER_CONNECTION = 8
MAX_FRUITLESS_ATTEMPTS = 5  # docs/protocol.md §6.3 step 4
URL_REFRESH_MARGIN_S = 30.0
JOURNAL_FLUSH_INTERVAL_S = 0.1  # bounds what a kill loses to ~0.1 s of transfer
HASH_CHUNK = 8 * MiB
# Received bytes are written by a thread, in batches of about this size: one batch per
# connection is written while the next one arrives, so memory stays at connections × 2 ×
# this, and the event loop never waits on the page cache.
WRITE_BATCH = 2 * MiB  # gathered in memory; written in diskio.WRITE_PIECE calls
MAX_BATCH_BUFFERS = 256  # well under IOV_MAX for one pwritev
# An fdatasync in the background after about this many bytes: the disk writes while the
# network delivers, and the install's final fsync finds little left (fetcher.py).
WRITEBACK_EVERY = 64 * MiB
JOURNAL_FORMAT = 1
# The headers that describe the whole archive; kept in the journal so a resumed process
# that has nothing left to fetch can still verify against them.
VALIDATOR_HEADERS = ("etag", "repr-digest", "x-goog-hash")
