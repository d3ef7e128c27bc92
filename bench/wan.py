"""A simulated wide-area link in front of a loopback server: round-trip delay and a
bandwidth bottleneck, at the TCP level, so TLS, HTTP/1.1 and HTTP/2 all pay for it as
they would on a real path.

    python bench/wan.py --link far:150:2M --link near:15:40M \
        --forward origin:127.0.0.1:8443:far --forward mirror:127.0.0.1:9443:near
    # prints "forward NAME PORT" for each, then serves until killed

Each link is shared by every connection through it (one bottleneck per remote site, as
a path to a distant registry is). The model, per direction of each connection:

- a byte read at t leaves the bottleneck at max(t, link free) + size / rate, and arrives
  one-way delay (RTT / 2) later;
- a new connection pays one extra round trip before its first byte arrives, for the TCP
  handshake that loopback does instantly.

So a request on a kept-alive connection costs one RTT plus its bytes at the link's rate,
a new TLS 1.3 connection two RTTs more, as on a real path. This runs in a process of its
own so that its timing does not depend on what the harness is doing.

Waiting here is the simulation itself (the delay a real network adds), not synchronisation.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from dataclasses import dataclass

CHUNK = 16 * 1024
# Bytes a direction may have read but not yet delivered: enough for the link's
# bandwidth-delay product, so that the simulation, not this buffer, sets the pace.
MIN_WINDOW = 256 * 1024


def rate_arg(text: str) -> float:
    units = {"k": 1e3, "m": 1e6, "g": 1e9}
    suffix = text[-1].lower()
    return float(text[:-1]) * units[suffix] if suffix in units else float(text)


@dataclass
class Bottleneck:
    """One direction of a link: bytes leave it in order, at `rate` bytes per second."""
    rate: float
    free_at: float = 0.0

    def departure(self, now: float, size: int) -> float:
        start = max(now, self.free_at)
        self.free_at = start + size / self.rate
        return self.free_at


@dataclass
class Link:
    name: str
    rtt: float  # seconds
    rate: float  # bytes per second, each direction

    def __post_init__(self) -> None:
        self.down = Bottleneck(self.rate)  # server → client
        self.up = Bottleneck(self.rate)    # client → server

    @property
    def window(self) -> int:
        return max(MIN_WINDOW, int(self.rate * self.rtt * 2))


def link_arg(text: str) -> Link:
    name, rtt_ms, rate = text.split(":")
    return Link(name, float(rtt_ms) / 1000, rate_arg(rate))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bottleneck: Bottleneck,
                one_way: float, not_before: float, window: int) -> None:
    """Copy one direction, each chunk delivered when the link model says it arrives."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    room = asyncio.Semaphore(max(1, window // CHUNK))

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
            room.release()
        if writer.can_write_eof():
            writer.write_eof()

    delivery = asyncio.create_task(deliver())
    try:
        while True:
            await room.acquire()
            data = await reader.read(CHUNK)
            if not data:
                break
            now = max(time.monotonic(), not_before)
            queue.put_nowait((bottleneck.departure(now, len(data)) + one_way, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait(None)
    try:
        await delivery
    except (ConnectionError, OSError):
        pass


async def _serve_connection(link: Link, target: tuple[str, int], client_r: asyncio.StreamReader,
                            client_w: asyncio.StreamWriter) -> None:
    accepted = time.monotonic()
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()
        return
    for w in (client_w, server_w):
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    one_way = link.rtt / 2
    # The handshake's round trip: the client's first bytes set out only after it.
    await asyncio.gather(
        _pipe(client_r, server_w, link.up, one_way, accepted + link.rtt, link.window),
        _pipe(server_r, client_w, link.down, one_way, 0.0, link.window),
        return_exceptions=True)
    for w in (client_w, server_w):
        w.close()


async def serve(links: dict[str, Link], forwards: list[tuple[str, str, int, str]]) -> None:
    servers = []
    for name, host, target_port, link_name in forwards:
        link = links[link_name]
        server = await asyncio.start_server(
            lambda r, w, link=link, target=(host, target_port): _serve_connection(link, target, r, w),
            host, 0, backlog=1024)
        servers.append(server)
        print(f"forward {name} {server.sockets[0].getsockname()[1]}", flush=True)
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--link", type=link_arg, action="append", required=True, metavar="NAME:RTT_MS:RATE")
    ap.add_argument("--forward", action="append", required=True, metavar="NAME:HOST:TARGET_PORT:LINK",
                    help="listen on HOST (ephemeral port), forward to HOST:TARGET_PORT over LINK")
    args = ap.parse_args()
    links = {link.name: link for link in args.link}
    forwards = []
    for spec in args.forward:
        name, host, port, link = spec.split(":")
        if link not in links:
            ap.error(f"--forward {spec}: no --link named {link!r}")
        forwards.append((name, host, int(port), link))
    try:
        asyncio.run(serve(links, forwards))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
