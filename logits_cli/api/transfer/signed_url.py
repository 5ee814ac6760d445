"""The current signed URL, renewed before it expires or when refused (docs/protocol.md §6.3
steps 1 and 5), with the blob server's clock rather than ours, and a bounded number of
renewals the URL's expiry does not explain (issue 21, G9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime

import httpx

from logits_cli import models
from logits_cli.api.transfer.tuning import URL_REFRESH_MARGIN_S
from logits_cli.errors import DownloadUrlRefusedError

# Renewals the listed expiry does not explain (refusals, URLs that arrive expired): this many
# in a row, the later ones after 0.5, 1, 2 s; a URL that served this long resets the count.
MAX_EARLY_URL_RENEWALS = 4
EARLY_RENEWAL_BACKOFF_S = 0.5
URL_SETTLED_S = 60.0
CLOCKS_AGREE_S = 2.0
NOT_THE_KEY = "not a problem of your API key"


class SignedUrl:
    """The current signed URL, fetched again when it is about to expire or was refused.

    *Expiry* is judged on the server's clock: ``note_server_date`` learns its offset from
    ours from a blob answer's ``Date``. A fresh URL is fetched before a request when less
    than 30 s remain; for URLs whose whole lifetime is shorter than that, when less than
    half of it remains (otherwise every request would fetch a new one). A URL that looks
    expired on arrival says our clock cannot judge it (no ``Date`` yet): it is then used
    until the blob server refuses it, rather than replaced before every request.

    *Refusals* (any 401 or 403 from the blob server: the URL is the only credential it
    sees) renew the URL once; a fresh URL refused before any answer accepted it, and while
    its listed expiry is still ahead, ends the download with ``DownloadUrlRefusedError``
    (one refused after its expiry is simply renewed: it was too short-lived to reach). So do more than ``MAX_EARLY_URL_RENEWALS``
    renewals in a row that the listed expiry does not explain (each after a growing
    pause), whatever their cause; a URL that lasted ``URL_SETTLED_S`` resets the count.
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
        self._expires = 0.0  # on the server's clock
        self._fetched_at = 0.0  # on ours
        self._offset = 0.0  # the server's clock minus ours
        self._refused_fresh = False  # the current URL replaced a refused one, none accepted
        self._early = 0  # renewals in a row that the listed expiry does not explain
        self._first_early = 0.0
        self.generation = 0

    async def _refresh(self) -> None:
        answer = await self._fetch()
        self._fetched_at = self._clock()
        self._url = answer.url
        self._expires = answer.expires.timestamp()
        self.generation += 1

    def _server_now(self) -> float:
        return self._clock() + self._offset

    def _lifetime(self) -> float:
        """How long the current URL had to live when it arrived, on the server's clock; not
        above zero when our clock cannot judge it."""
        return self._expires - (self._fetched_at + self._offset)

    def _due(self) -> bool:
        """Less than the margin left, on a clock that can judge this URL."""
        lifetime = self._lifetime()
        margin = min(URL_REFRESH_MARGIN_S, lifetime / 2)
        return lifetime > 0 and self._expires - self._server_now() < margin

    def note_server_date(self, date: str | None) -> None:
        """A blob answer's ``Date``: its sender's clock, which judges the URL's expiry."""
        if not date:
            return
        try:
            # Whole seconds, truncated: the sender's time was within the second after it.
            server = parsedate_to_datetime(date).timestamp() + 0.5
        except (TypeError, ValueError, IndexError, OverflowError):
            return  # a Date we cannot read tells nothing
        offset = server - self._clock()
        # Within the Date's resolution (and the answer's way here) the clocks agree.
        self._offset = offset if abs(offset) > CLOCKS_AGREE_S else 0.0

    def accepted(self, url: str) -> None:
        """The blob server answered ``url`` with data: it is good."""
        if url == self._url:
            self._refused_fresh = False

    async def get(self) -> tuple[str, int]:
        async with self._lock:
            if self._url is None or self._due():
                await self._refresh()
            assert self._url is not None
            return self._url, self.generation

    async def renew(self, generation: int, *, refusal: str | None = None) -> None:
        """Fetch a new URL unless another request already replaced ``generation``.
        ``refusal`` is what the blob server said when it refused the URL (401/403)."""
        async with self._lock:
            if generation != self.generation:
                return
            host = httpx.URL(self._url or "").host or "the blob server"
            if self._due() or self.expired():
                self._early = 0  # the URL's own expiry explains this renewal
            elif refusal is not None and self._refused_fresh:
                raise DownloadUrlRefusedError(
                    f"{host} refused the download URL ({refusal}), and a fresh one too; "
                    f"{NOT_THE_KEY}: the service signs URLs its blob store does not accept "
                    "(try later, or tell the service's operator)"
                )
            else:
                await self._early_renewal(host, refusal)
            await self._refresh()
            self._refused_fresh = refusal is not None

    async def _early_renewal(self, host: str, refusal: str | None) -> None:
        """Count a renewal the listed expiry does not explain; pause before the later ones."""
        now = self._clock()
        if now - self._fetched_at >= URL_SETTLED_S or self._early == 0:
            self._early, self._first_early = 0, now
        self._early += 1
        if self._early > MAX_EARLY_URL_RENEWALS:
            raise DownloadUrlRefusedError(
                f"{self._early - 1} fresh download URLs from {host} in "
                f"{now - self._first_early:.0f} s were each refused or expired early"
                f"{f' ({refusal})' if refusal else ''}; {NOT_THE_KEY}: check this "
                "machine's clock, or tell the service's operator"
            )
        if self._early > 1:
            await asyncio.sleep(EARLY_RENEWAL_BACKOFF_S * 2 ** (self._early - 2))

    def expired(self) -> bool:
        """Past the listed expiry, on a clock that can judge this URL."""
        return (
            self._url is not None and self._lifetime() > 0 and self._server_now() >= self._expires
        )
