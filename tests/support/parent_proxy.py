"""A corporate parent proxy on loopback: CONNECT tunnels and absolute-form plain-http
requests, with optional Basic authentication, recording every request line it gets."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.support.fakes import WAIT, LoopThread


@dataclass
class ParentProxy:
    loops: LoopThread
    credentials: str | None = None  # "user:password" it demands, if any
    seen: list[str] = field(default_factory=list)  # request lines, e.g. "CONNECT 127.0.0.2:443"
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ParentProxy:
        self.loops.run(self._start())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.loops.run(self._close())

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        # Tunnels the proxy keeps alive would hold wait_closed() (Python 3.12 waits for them).
        for writer in list(self._open):
            writer.close()
        await self._server.wait_closed()

    def tunnels(self) -> list[str]:
        return [line.split()[1] for line in self.seen if line.startswith("CONNECT ")]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            self.seen.append(f"{method} {target}")
            if self.credentials is not None and headers.get("proxy-authorization") != \
                    "Basic " + base64.b64encode(self.credentials.encode()).decode():
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"parent\"\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                self._open.add(up_writer)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            else:  # absolute-form plain http: forwarded in origin-form, one request per connection
                url = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
                self._open.add(up_writer)
                kept = [h for h in lines[1:] if h and not h.lower().startswith(("proxy-", "connection:"))]
                up_writer.write((f"{method} {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1\r\n"
                                 + "".join(f"{h}\r\n" for h in kept) + "Connection: close\r\n\r\n").encode("latin-1"))
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
