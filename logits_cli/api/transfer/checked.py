"""``fetch_and_check``: one signed URL into one part file, verified against the digest the
server offers; a mismatch is fetched once more from scratch, then refused (exit 7)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from logits_cli.api.download_options import DownloadOptions, ProgressCallback
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.transfer.digests import (
    hash_file,
)

# -- the segment engine ---------------------------------------------------------------------
from logits_cli.api.transfer.fetcher import RangedFetcher
from logits_cli.api.transfer.install import discard, discard_unresumable
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.errors import (
    IntegrityError,
)


async def fetch_and_check(
    http: httpx.AsyncClient,
    urls: SignedUrl,
    part: Path,
    journal_path: Path,
    identity: dict[str, Any],
    expected_size: int | None,
    expected_sha256: str | None,
    segment_size: int,
    options: DownloadOptions,
    progress: ProgressCallback | None,
    policy: RetryPolicy | None,
    *,
    write_back: bool,
) -> tuple[int, bool, str, int]:
    try:
        return await _fetch_checked_twice(
            http,
            urls,
            part,
            journal_path,
            identity,
            expected_size,
            expected_sha256,
            segment_size,
            options,
            progress,
            policy,
            write_back=write_back,
        )
    except BaseException as failure:
        # Only what a later run can resume stays: a part whose journal counts good bytes
        # (a refused URL, a body of unknown size, a kill before the first byte leave none).
        discard_unresumable(part, journal_path, invalid=isinstance(failure, IntegrityError))
        raise


async def _fetch_checked_twice(
    http: httpx.AsyncClient,
    urls: SignedUrl,
    part: Path,
    journal_path: Path,
    identity: dict[str, Any],
    expected_size: int | None,
    expected_sha256: str | None,
    segment_size: int,
    options: DownloadOptions,
    progress: ProgressCallback | None,
    policy: RetryPolicy | None,
    *,
    write_back: bool,
) -> tuple[int, bool, str, int]:
    fetched_total = 0
    resumed_first: bool | None = None
    for _ in range(2):
        fetcher = RangedFetcher(
            http,
            urls,
            part,
            journal_path,
            identity,
            expected_size=expected_size,
            checkpoint_sha256=expected_sha256,
            segment_size=segment_size,
            connections=options.connections,
            stall_timeout=options.stall_timeout,
            progress=progress,
            policy=policy,
            low_speed_limit=options.low_speed_limit,
            low_speed_time=options.low_speed_time,
            write_back=write_back,
            max_unsized=options.max_unsized_bytes,
        )
        result = await fetcher.run()
        fetched_total += result.bytes_fetched
        if resumed_first is None:
            resumed_first = result.resumed
        expected = result.expected
        digests = result.digests
        if expected is not None and expected.algorithm not in digests:
            # The digest on offer changed while resuming: one more pass over the file.
            digests = digests | await asyncio.to_thread(hash_file, part, {expected.algorithm})
        if expected is None or digests[expected.algorithm] == expected.value:
            return fetched_total, bool(resumed_first), digests["sha256"].hex(), result.size
        discard(part, journal_path)
    source = expected.source if expected is not None else "its digest"
    raise IntegrityError(
        f"the downloaded {part.name.removesuffix('.part')} does not match its digest "
        f"({source}), twice"
    )
