"""Fake upstream servers (origins and mirrors) on loopback that count what they receive.

All fakes share one asyncio loop in a background thread. Each fake answers the paths
it was told about and 404s the rest. Behaviours that must wait (a stalled mirror, a
body sent in two halves) wait on a `Gate` the test opens, never on a timer.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]
WAIT = 30.0  # upper bound for anything the harness waits for


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fakes", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = WAIT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)


class Gate:
    """Something a fake waits for until the test opens it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self.reached = threading.Event()  # set when a handler starts waiting

    def open(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        self.reached.set()
        await asyncio.wait_for(self._event.wait(), WAIT)


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Fake:
    loops: LoopThread
    name: str
    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    routes: dict[str, Behaviour] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    name_in_url: str | None = None  # e.g. "localhost", for clients that will not verify IP addresses
    fallback: Behaviour | None = None  # answers paths that have no route of their own
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.name_in_url or self.host}:{self.port}/"

    def count(self, path: str | None = None) -> int:
        return sum(1 for h in self.hits if path is None or h.path == path)

    def start(self) -> Fake:
        self.loops.run(self._start())
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        for g in self.gates:
            g.open()
        if self._runner:
            self.loops.run(self._runner.cleanup())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(Hit(request.method, request.path_qs, dict(request.headers)))
        behaviour = self.routes.get(request.path_qs) or self.routes.get(request.path) or self.fallback
        if behaviour is None:
            return web.Response(status=404, text=f"{request.path} is not on {self.name}\n")
        return await behaviour(request)

    # ---- behaviours -------------------------------------------------------------------

    def gate(self) -> Gate:
        g = self.loops.run(_make_gate(self.loops.loop))
        self.gates.append(g)
        return g

    def serve(self, path: str, body: bytes = b"", status: int = 200, headers: dict | None = None) -> None:
        async def behaviour(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=body, headers={"X-Served-By": self.name, **(headers or {})})
        self.routes[path] = behaviour

    def with_etag(self, path: str, body: bytes, etag: str, headers: dict | None = None) -> None:
        """Serve `body` with an ETag, and 304 to a request that already has it."""
        async def behaviour(request: web.Request) -> web.StreamResponse:
            common = {"ETag": etag, "X-Served-By": self.name, **(headers or {})}
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=common)
            return web.Response(body=body, headers=common)
        self.routes[path] = behaviour

    def by_accept(self, path: str, bodies: dict[str, bytes]) -> None:
        """A different representation for each Accept value (npm's full and abbreviated
        documents, PyPI's HTML and JSON pages)."""
        async def behaviour(request: web.Request) -> web.StreamResponse:
            accept = request.headers.get("Accept", "")
            return web.Response(body=bodies[accept], headers={"Content-Type": accept, "Vary": "Accept"})
        self.routes[path] = behaviour

    def stall(self, path: str, gate: Gate) -> None:
        """Accept the request and send nothing until the gate opens."""
        async def behaviour(request: web.Request) -> web.StreamResponse:
            await gate.wait()
            return web.Response(text="late\n")
        self.routes[path] = behaviour

    def two_halves(self, path: str, first: bytes, rest: bytes, gate: Gate) -> None:
        """Send headers and `first`, then wait for the gate before sending `rest`."""
        async def behaviour(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"X-Served-By": self.name})
            resp.content_length = len(first) + len(rest)
            await resp.prepare(request)
            await resp.write(first)
            await gate.wait()
            await resp.write(rest)
            await resp.write_eof()
            return resp
        self.routes[path] = behaviour

    def broken_body(self, path: str, promised: int, sent: bytes) -> None:
        """Promise `promised` bytes, send `sent`, then drop the connection."""
        async def behaviour(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"X-Served-By": self.name})
            resp.content_length = promised
            await resp.prepare(request)
            await resp.write(sent)
            request.transport.close()
            return resp
        self.routes[path] = behaviour

    def pattern(self, path: str, size: int, chunk: int = 1 << 20) -> None:
        """Stream `size` bytes of a repeating pattern without holding them."""
        block = bytes(range(256)) * (chunk // 256)

        async def behaviour(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"X-Served-By": self.name})
            resp.content_length = size
            await resp.prepare(request)
            left = size
            while left > 0:
                part = block[: min(left, len(block))]
                await resp.write(part)
                left -= len(part)
            await resp.write_eof()
            return resp
        self.routes[path] = behaviour


async def _make_gate(loop: asyncio.AbstractEventLoop) -> Gate:
    return Gate(loop)


def pattern_bytes(size: int, chunk: int = 1 << 20) -> bytes:
    block = bytes(range(256)) * (chunk // 256)
    return (block * (size // len(block) + 1))[:size]


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on which nothing listens, so connecting is refused at once."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
