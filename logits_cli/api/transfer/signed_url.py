"""The current signed URL, renewed before it expires or when refused (docs/protocol.md §6.3 steps 1, 4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from logits_cli import models
from logits_cli.api.transfer.tuning import URL_REFRESH_MARGIN_S

# -- signed URL with expiry (docs/protocol.md §6.3 steps 1 and 4) --------------------------------


class SignedUrl:
    """The current signed URL, fetched again when it is about to expire or was refused.

    A fresh URL is fetched before a request when less than 30 s remain; for URLs whose whole
    lifetime is shorter than that, when less than half of it remains (otherwise every request
    would fetch a new one).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[models.CheckpointArchiveUrlResponse]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = asyncio.Lock()
        self._url: str | None = None
        self._expires = 0.0
        self._margin = URL_REFRESH_MARGIN_S
        self.generation = 0

    async def _refresh(self) -> None:
        answer = await self._fetch()
        now = self._clock()
        self._url = answer.url
        self._expires = answer.expires.timestamp()
        self._margin = min(URL_REFRESH_MARGIN_S, max(0.0, self._expires - now) / 2)
        self.generation += 1

    async def get(self) -> tuple[str, int]:
        async with self._lock:
            if self._url is None or self._expires - self._clock() < self._margin:
                await self._refresh()
            assert self._url is not None
            return self._url, self.generation

    async def renew(self, generation: int) -> None:
        """Fetch a new URL unless another request already replaced ``generation``."""
        async with self._lock:
            if generation == self.generation:
                await self._refresh()

    def expired(self) -> bool:
        return self._url is not None and self._clock() >= self._expires
