"""Single-flight fills: one upstream fetch per key, shared by every client that asks for
that key while it runs, each reading the growing body from the fill's file as it arrives.

The fill runs as its own task, so a client that goes away does not end it for the
others, nor the cache entry it is writing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from mirrorgate.cache import policy
from mirrorgate.cache.policy import Class, Entry
from mirrorgate.cache import codings
from mirrorgate.cache.store import Store, Writer
from mirrorgate.protocols import Expectation
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
        if self.start.done():
            return  # readers already follow the first start (a later failure ends them via finish)
        # A descriptor of the fill's own: the writer syncs and closes its one on its own time.
        self.fd = os.dup(fd) if fd is not None else None
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
    cls: Class | None  # None: not cached, filled only to be checked or rewritten
    path: str
    headers: dict[str, str]  # the first client's, minus its conditionals
    stale: Entry | None  # the entry being revalidated, if any
    expect: Callable[[], Awaitable[Expectation | None]] | None = None  # what the body must be, if knowable
    rewrite: Callable[[str, str, bytes], bytes | None] | None = None  # (page_url, content_type, body)


Walker = Callable[[Mapping[str, str], Mapping[str, str], frozenset[str]], Awaitable[Walked]]

# In `excluded`: skip every mirror (to the origin, whose bytes need no holding).
ALL_MIRRORS = "*"
# A body to rewrite is read whole; larger ones are refused rather than held in memory.
MAX_REWRITE = 128 * 1024 * 1024


class Unusable(Exception):
    """These bytes must not be served; the cause is recorded as the hop's fallback."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


async def run_fill(fill: Fill, req: FillRequest, store: Store, walker: Walker,
                   bad_bytes: Callable[[Hop], None] = lambda hop: None) -> None:
    """Fetch once, stream into a file every waiting client reads, publish if storable.
    Never raises but for cancellation: every outcome is handed to the waiting clients."""
    try:
        await _fill(fill, req, store, walker, bad_bytes)
    except asyncio.CancelledError:
        fill.begin(Failed(["the proxy is shutting down"]))
        fill.finish("the proxy is shutting down")
        raise
    except Exception as e:  # a bug must not leave clients waiting forever
        log.exception("cache fill for %s failed", req.url)
        fill.begin(Failed([f"internal error: {e!r}"]))
        fill.finish(repr(e))


async def _fill(fill: Fill, req: FillRequest, store: Store, walker: Walker,
                bad_bytes: Callable[[Hop], None]) -> None:
    checking = None
    if req.expect is not None:
        # The trusted lookup (often at the far origin) runs while the mirror answers,
        # so that a check costs the slower of the two round trips, not their sum.
        checking = asyncio.ensure_future(req.expect())
    try:
        await _walk(fill, req, store, walker, bad_bytes, checking)
    finally:
        if checking is not None:
            checking.cancel()
            if checking.done() and not checking.cancelled():
                checking.exception()  # retrieved: a lookup nobody waited for is no error


async def _walk(fill: Fill, req: FillRequest, store: Store, walker: Walker, bad_bytes: Callable[[Hop], None],
                checking: asyncio.Future[Expectation | None] | None) -> None:
    extra = policy.revalidation_headers(req.stale) if req.stale else {}
    if req.rewrite is not None:
        extra["Accept-Encoding"] = "gzip"  # a coding the rewrite can undo
    if checking is not None:
        extra["Accept-Encoding"] = "identity"  # a digest names the file's bytes, not a coding of them
    headers = {k: v for k, v in req.headers.items() if k.lower() not in CLIENT_CONDITIONALS}
    expectation: Expectation | None = None
    excluded: set[str] = set()
    failures: list[str] = []
    while True:
        w = await walker(headers, extra, frozenset(excluded))
        fill.fallbacks += w.fallbacks
        fill.skipped = w.skipped
        failures += w.failures
        opened, hop = w.opened, w.hop
        if req.stale is not None and (opened is None or opened.status >= 500):
            # Every upstream failed: what we hold is better than an error.
            if opened is not None:
                opened.release()
            fill.begin(Answered(req.stale, "STALE", None))
            return fill.finish()
        if opened is None or hop is None:
            fill.begin(Failed(failures))
            return fill.finish()
        if checking is not None:
            try:
                expectation = await checking
            except BaseException:
                opened.release()
                raise
        from_mirror = hop.kind == "mirror"
        out_headers = response_headers(opened, from_mirror)
        if req.stale is not None and opened.status == 304:
            opened.release()
            merged = policy.merge_not_modified(req.stale.headers, out_headers)
            fill.begin(Answered(store.revalidated(req.stale, merged, time.time()), "REVALIDATED", hop))
            return fill.finish()
        keep = req.cls is not None and policy.storable(opened.status, out_headers, from_origin=not from_mirror)
        if req.expect is not None and expectation is None and from_mirror:
            keep = False  # a body that should be checked but could not be: served, never kept
        declared = opened.headers.get("Content-Length", "")
        length = int(declared) if declared.isdigit() else None
        held = opened.status == 200 and (expectation is not None or req.rewrite is not None)
        if not held:
            return await _stream_through(fill, req, store, opened, hop, out_headers, keep, length, bad_bytes)
        try:
            writer, out_headers = await _held(req, store, opened, hop, out_headers, length, expectation)
        except Unusable as e:
            fill.fallbacks.append((hop, e.cause))
            failures.append(f"{hop} {e.cause} ({e})")
            log.warning("%s from %s: %s", req.url, hop, e)
            if e.cause == "integrity":
                bad_bytes(hop)
            if not from_mirror:
                fill.begin(Failed(failures))
                return fill.finish()
            excluded.add(hop.url)
            continue
        if writer is None:  # no room to hold it: the origin streams straight through
            if from_mirror:
                opened.release()
                excluded.add(ALL_MIRRORS)
                continue
            fill.begin(Direct(opened, hop))
            return fill.finish()
        try:
            if keep:
                await _publish(store, writer, req, 200, out_headers, hop)
            # The whole body is known: clients get its exact length.
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
            fill.begin(Streamed(200, opened.reason, out_headers + [("Content-Length", str(writer.written))], hop),
                       writer.fd)
            fill.advance(writer.written)
            if not keep:
                writer.discard()  # readers keep the fill's own descriptor
        finally:
            writer.close()
        return fill.finish()


async def _stream_through(fill: Fill, req: FillRequest, store: Store, opened: Opened, hop: Hop,
                          headers: list[tuple[str, str]], keep: bool, length: int | None,
                          bad_bytes: Callable[[Hop], None]) -> None:
    """Readers follow the body as it arrives."""
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
        bad_bytes(hop)  # a mirror that breaks off bodies is unhealthy, though this one cannot fall back
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
            await _publish(store, writer, req, opened.status, headers, hop)
        else:
            writer.discard()
    finally:
        writer.close()
    fill.finish()


async def _publish(store: Store, writer: Writer, req: FillRequest, status: int, headers: list[tuple[str, str]],
                   hop: Hop) -> None:
    """Sync the checked body, then make it the entry for its key."""
    await asyncio.to_thread(writer.sync)
    now = time.time()
    store.publish(writer, Entry(req.key, req.url, req.cls, status, tuple(headers),  # type: ignore[arg-type]
                                writer.written, now, now, str(hop)))


async def _held(req: FillRequest, store: Store, opened: Opened, hop: Hop, headers: list[tuple[str, str]],
                length: int | None, expectation: Expectation | None) -> tuple[Writer | None, list[tuple[str, str]]]:
    """Download the whole body before any client sees a byte: check its digest, rewrite
    it. Raises Unusable when these bytes must not be served."""
    writer = store.begin(length) if req.cls is not None else store.spool()
    if writer is None:
        return None, headers  # the caller decides what becomes of `opened`
    page_url = str(opened.response.url)  # after any redirect: relative links resolve here
    try:
        async for chunk in opened.body():
            writer.write(chunk)
            if req.rewrite is not None and writer.written > MAX_REWRITE:
                raise Unusable("rewrite_error", f"body larger than {MAX_REWRITE >> 20} MiB")
        if length is not None and writer.written != length:
            raise Unusable("protocol_error", f"sent {writer.written} of {length} bytes")
        if expectation is not None and not await asyncio.to_thread(expectation.verify, writer.fd, writer.written):
            raise Unusable("integrity", f"body does not match {expectation}")
        if req.rewrite is not None:
            return await _rewritten(req, store, writer, hop, page_url, headers)
        return writer, headers
    except UpstreamFailure as f:
        writer.discard()
        raise Unusable(f.kind, str(f)) from None
    except BaseException:
        writer.discard()
        raise
    finally:
        opened.release()


async def _rewritten(req: FillRequest, store: Store, writer: Writer, hop: Hop, page_url: str,
                     headers: list[tuple[str, str]]) -> tuple[Writer, list[tuple[str, str]]]:
    assert req.rewrite is not None
    raw = await asyncio.to_thread(os.pread, writer.fd, writer.written, 0)
    named = {k.lower(): v for k, v in headers}
    coding = named.get("content-encoding", "identity").lower()
    try:
        # Off the event loop: a big channel's index takes a while to decode and read.
        body = await asyncio.to_thread(codings.decode, raw, coding)
        new = await asyncio.to_thread(req.rewrite, page_url, named.get("content-type", ""), body)
    except Exception as e:  # RewriteError, bad JSON or HTML, a coding we cannot undo, a mirror's odd shapes
        if hop.kind == "origin":
            return writer, headers  # the origin's own body needs no rewrite to be canonical
        raise Unusable("rewrite_error", str(e)) from None
    if new is None:
        return writer, headers  # as the upstream sent it, in its coding and with its ETag
    writer.discard()
    rewritten = store.begin(len(new)) if req.cls is not None else store.spool()
    if rewritten is None:
        raise Unusable("rewrite_error", "no room on disk for the rewritten body")
    rewritten.write(new)
    upstream_etag = named.get("etag")
    drop = {"content-encoding", "content-length", "etag", "content-md5", "digest", "repr-digest"}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    # A new body is a new representation: it gets its own strong validator, and the
    # upstream's is kept (hidden) for revalidation.
    digest = await asyncio.to_thread(lambda: hashlib.sha256(new).hexdigest())
    out.append(("ETag", f'"mg-{digest[:32]}"'))
    if upstream_etag:
        out.append((policy.UPSTREAM_ETAG, upstream_etag))
    return rewritten, out
