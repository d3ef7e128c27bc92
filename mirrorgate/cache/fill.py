"""Single-flight fills: one upstream fetch per key, shared by every client that asks for
that key while it runs, each reading the growing body from the fill's file as it arrives.

The fill runs as its own task, so a client that goes away does not end it for the
others, nor the cache entry it is writing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from mirrorgate.cache import policy
from mirrorgate.cache.policy import Class, Entry
from mirrorgate.cache.store import Store
from mirrorgate.trace import Hop
from mirrorgate.upstream import Opened, UpstreamFailure
from mirrorgate.walk import Walked, response_headers

log = logging.getLogger("mirrorgate.cache")


@dataclass
class Streamed:
    """The fill is streaming an upstream response into its file."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    upstream: Hop


@dataclass
class Answered:
    """The fill ended without a body of its own: serve this stored entry."""

    entry: Entry
    state: str  # "REVALIDATED" | "STALE"
    upstream: Hop | None


@dataclass
class Failed:
    """No upstream could be used and nothing stored can stand in."""

    failures: list[str]


@dataclass
class Direct:
    """No room on disk: the first client streams the upstream response straight through;
    any others fetch for themselves."""

    opened: Opened | None
    upstream: Hop

    def claim(self) -> Opened | None:
        opened, self.opened = self.opened, None
        return opened


Start = Streamed | Answered | Failed | Direct


class Fill:
    def __init__(self, key: str) -> None:
        self.key = key
        self.start: asyncio.Future[Start] = asyncio.get_running_loop().create_future()
        self.fallbacks: list[tuple[Hop, str]] = []
        self.skipped: list[Hop] = []
        self.fd: int | None = None
        self.written = 0
        self.done = False
        self.error: str | None = None
        self.readers = 0
        self.retired = False
        self._progress = asyncio.Event()

    def begin(self, start: Start, fd: int | None = None) -> None:
        # A descriptor of the fill's own: the writer syncs and closes its one on its own time.
        self.fd = os.dup(fd) if fd is not None else None
        if not self.start.done():
            self.start.set_result(start)

    def advance(self, n: int) -> None:
        self.written += n
        self._wake()

    def finish(self, error: str | None = None) -> None:
        """The body is complete (or never will be): readers may end."""
        if self.done:
            return
        self.done = True
        self.error = error
        self._wake()

    def retire(self) -> None:
        """The fill's task is over and new clients find the published entry instead; the
        descriptor closes when the last reader leaves."""
        self.retired = True
        self._maybe_close()

    def _wake(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def wait_beyond(self, offset: int) -> None:
        """Until more than `offset` bytes may be read, or the fill is over."""
        while self.written - 1 <= offset and not self.done:
            await self._progress.wait()

    def read(self, offset: int, limit: int) -> bytes:
        assert self.fd is not None
        # The bytes were written moments ago and sit in the page cache: no thread needed.
        return os.pread(self.fd, min(limit, self.written - offset), offset)

    def join(self) -> None:
        self.readers += 1

    def leave(self) -> None:
        self.readers -= 1
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.retired and self.readers == 0:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            start = self.start.result() if self.start.done() else None
            if isinstance(start, Direct) and (opened := start.claim()) is not None:
                opened.release()  # nobody stayed to take it


# ---- the fill task ---------------------------------------------------------------------

# Request headers that belong to one client's own copy; a fill fetches the whole body for
# everyone (and sends the cache's own validators when revalidating).
CLIENT_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since",
                                 "range", "if-range"})


@dataclass
class FillRequest:
    key: str
    url: str  # canonical origin URL
    cls: Class
    path: str
    headers: dict[str, str]  # the first client's, minus its conditionals
    stale: Entry | None  # the entry being revalidated, if any


async def run_fill(fill: Fill, req: FillRequest, store: Store,
                   walker: Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[Walked]]) -> None:
    """Fetch once, stream into a file every waiting client reads, publish if storable.
    Never raises but for cancellation: every outcome is handed to the waiting clients."""
    try:
        await _fill(fill, req, store, walker)
    except asyncio.CancelledError:
        fill.begin(Failed(["the proxy is shutting down"]))
        fill.finish("the proxy is shutting down")
        raise
    except Exception as e:  # a bug must not leave clients waiting forever
        log.exception("cache fill for %s failed", req.url)
        fill.begin(Failed([f"internal error: {e!r}"]))
        fill.finish(repr(e))


async def _fill(fill: Fill, req: FillRequest, store: Store,
                walker: Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[Walked]]) -> None:
    extra = policy.revalidation_headers(req.stale) if req.stale else {}
    w = await walker({k: v for k, v in req.headers.items() if k.lower() not in CLIENT_CONDITIONALS}, extra)
    fill.fallbacks, fill.skipped = w.fallbacks, w.skipped
    opened, hop = w.opened, w.hop
    if req.stale is not None and (opened is None or opened.status >= 500):
        # Every upstream failed: what we hold is better than an error.
        if opened is not None:
            opened.release()
        fill.begin(Answered(req.stale, "STALE", None))
        return fill.finish()
    if opened is None or hop is None:
        fill.begin(Failed(w.failures))
        return fill.finish()
    from_mirror = hop.kind == "mirror"
    headers = response_headers(opened, from_mirror)
    if req.stale is not None and opened.status == 304:
        opened.release()
        merged = policy.merge_not_modified(req.stale.headers, headers)
        fill.begin(Answered(store.revalidated(req.stale, merged, time.time()), "REVALIDATED", hop))
        return fill.finish()

    keep = policy.storable(opened.status, headers, from_origin=not from_mirror)
    declared = opened.headers.get("Content-Length", "")
    length = int(declared) if declared.isdigit() else None
    writer = store.begin(length) if keep else store.spool()
    if writer is None:
        fill.begin(Direct(opened, hop))
        return fill.finish()
    fill.begin(Streamed(opened.status, opened.reason, headers, hop), writer.fd)
    try:
        async for chunk in opened.body():
            writer.write(chunk)
            fill.advance(len(chunk))
        if length is not None and writer.written != length:
            raise UpstreamFailure("protocol_error", f"sent {writer.written} of {length} bytes")
    except UpstreamFailure as f:
        writer.discard()
        return fill.finish(f"upstream failed mid-body: {f}")
    except OSError as e:
        log.warning("Cache write to %s failed (%s): this response is not cached", writer.path, e)
        writer.discard()
        return fill.finish(f"cache write failed: {e}")
    finally:
        opened.release()
    # Clients end with the publication, so that the next request is a plain hit; the
    # sync is what keeps a power cut from leaving an indexed but empty body.
    try:
        if keep:
            await asyncio.to_thread(writer.sync)
            now = time.time()
            store.publish(writer, Entry(req.key, req.url, req.cls, opened.status, tuple(headers), writer.written,
                                        now, now, str(hop)))
        else:
            writer.discard()
    finally:
        writer.close()
    fill.finish()
