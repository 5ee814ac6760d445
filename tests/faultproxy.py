"""A small fault-injecting TCP proxy for transfer tests (docs/ARCHITECTURE.md §4).

It runs its own event loop in a background thread and forwards bytes to an upstream HTTP
server. Each new client connection takes the next ``Fault`` from ``plan`` (connections past
the plan pass through untouched):

- ``reset``: after ``after`` response bytes, abort both sides with a TCP RST;
- ``truncate``: after ``after`` response bytes, close the client side cleanly (FIN);
- ``stall``: after ``after`` response bytes, stop forwarding but keep the connection open;
- ``corrupt``: flip the response byte at stream offset ``after`` and go on;
- ``status``: answer the first request itself with ``status`` and close.

``rate`` (bytes per second) throttles every response; ``corrupt_every`` flips one byte in
every that many response bytes on every connection; ``strip_range`` removes ``Range`` and
``If-Range`` from requests, imitating a server that ignores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fault:
    kind: str  # "reset" | "truncate" | "stall" | "corrupt" | "status"
    after: int = 0
    status: int = 503


class FaultProxy:
    def __init__(
        self,
        *,
        rate: int | None = None,
        strip_range: bool = False,
        corrupt_every: int | None = None,
    ) -> None:
        self.plan: deque[Fault] = deque()
        self.rate = rate
        self.corrupt_every = corrupt_every
        self.strip_range = strip_range
        self.upstream: tuple[str, int] | None = None
        self.connections = 0
        self.faults_applied = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one connection -------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        fault = self.plan.popleft() if self.plan else None
        try:
            if fault is not None and fault.kind == "status":
                self.faults_applied += 1
                await self._answer_status(reader, writer, fault.status)
                return
            assert self.upstream is not None, "set proxy.upstream first"
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            requests = asyncio.ensure_future(self._pump_requests(reader, up_writer))
            try:
                await self._pump_responses(up_reader, writer, fault)
            finally:
                requests.cancel()
                with contextlib.suppress(BaseException):
                    await requests
                up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # Cancelled only at shutdown; ending quietly keeps asyncio from logging it.
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _answer_status(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"detail": "injected failure", "code": "unavailable"}).encode()
        head = (
            f"HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    async def _pump_requests(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        """Forward request heads (GETs carry no body), dropping Range when asked to."""
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if self.strip_range:
                lines = head.split(b"\r\n")
                head = b"\r\n".join(
                    line for line in lines if not line.lower().startswith((b"range:", b"if-range:"))
                )
            up_writer.write(head)
            await up_writer.drain()

    async def _pump_responses(
        self,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
    ) -> None:
        sent = 0
        started = time.monotonic()
        while True:
            chunk = await up_reader.read(65536)
            if not chunk:
                return
            if fault is not None and sent <= fault.after < sent + len(chunk):
                cut = fault.after - sent
                self.faults_applied += 1
                if fault.kind == "corrupt":
                    flipped = bytearray(chunk)
                    flipped[cut] ^= 0xFF
                    chunk = bytes(flipped)
                    fault = None
                else:
                    writer.write(chunk[:cut])
                    await writer.drain()
                    await self._break(writer, fault)
                    return
            if self.corrupt_every:
                chunk = self._corrupt(chunk, sent)
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if self.rate:
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)

    def _corrupt(self, chunk: bytes, sent: int) -> bytes:
        assert self.corrupt_every
        flipped = bytearray(chunk)
        # Stream offsets N-1, 2N-1, …: never inside the first response's head.
        first = (self.corrupt_every - 1 - sent) % self.corrupt_every
        for offset in range(first, len(chunk), self.corrupt_every):
            flipped[offset] ^= 0xFF
        return bytes(flipped)

    async def _break(self, writer: asyncio.StreamWriter, fault: Fault) -> None:
        if fault.kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif fault.kind == "truncate":
            writer.close()
        elif fault.kind == "stall":
            # Hold the connection open, silent, until the client gives up on it.
            await asyncio.Event().wait()
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")
