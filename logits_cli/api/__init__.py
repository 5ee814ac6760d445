"""The API core: one async client over httpx, futures, retries, and the transfer engine.

Library use::

    import asyncio

    from logits_cli import config
    from logits_cli.api import open_client
    from logits_cli.uri import CheckpointRef

    async def main() -> None:
        # LOGITS_BASE_URL / LOGITS_API_KEY select a server; unset, the embedded backend.
        async with open_client(config.resolve()) as client:
            run = await client.create_run("Qwen/Qwen3-8B", rank=16)
            await client.save(run.training_run_id, "step-1000", ttl_seconds=7 * 86400)
            latest = CheckpointRef(run.training_run_id, "weights", "@latest")
            print((await client.get_checkpoint(latest)).tinker_path)
            print((await client.archive_url(latest)).url)  # signed, short-lived

    asyncio.run(main())

Every failure is a class of ``logits_cli.errors`` (each carries its CLI exit code). Never
imports ``cli``, ``typer`` or ``rich``, and never prints: progress goes through callbacks.
"""

from logits_cli.api.client import LogitsClient, PendingCallback
from logits_cli.api.connect import open_client
from logits_cli.api.download_options import (
    DownloadOptions,
    DownloadResult,
    ProgressCallback,
)
from logits_cli.api.retry import RetryPolicy

__all__ = [
    "DownloadOptions",
    "DownloadResult",
    "LogitsClient",
    "PendingCallback",
    "ProgressCallback",
    "RetryPolicy",
    "open_client",
]
