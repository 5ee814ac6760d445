"""The API core: one async client over httpx, futures, retries, and the transfer engine.

    from logits_cli.api import open_client
    async with open_client(config.resolve()) as client:
        ckpt = await client.save(run_id, "step-1000")

Never imports ``cli``, ``typer`` or ``rich``, and never prints.
"""

from logits_cli.api.client import (
    DownloadOptions,
    DownloadResult,
    LogitsClient,
    PendingCallback,
    ProgressCallback,
    open_client,
)

__all__ = [
    "DownloadOptions",
    "DownloadResult",
    "LogitsClient",
    "PendingCallback",
    "ProgressCallback",
    "open_client",
]
