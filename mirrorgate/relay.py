"""The relay: a loopback HTTP server inside mitmproxy's event loop that answers routed
requests from the cache, or fetches them from the first healthy mirror, falling back
through the others to the origin before the client has seen a byte, and streams the
winning body back.

mitmproxy cannot retry a flow, time out an upstream, or stream a body that an addon
produced (docs/architecture.md), so the Router addon points routed flows at this
server and lets mitmproxy stream its answer like any upstream's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from cachetools import LRUCache, TTLCache
from multidict import CIMultiDict

from mirrorgate import protocols, routing
from mirrorgate.cache import codings, policy
from mirrorgate.cache.fill import ALL_MIRRORS, Answered, Direct, Failed, Fill, FillRequest, Streamed, run_fill
from mirrorgate.cache.policy import Class, Entry, Freshness
from mirrorgate.cache.store import Store
from mirrorgate.circuit import CircuitBoard
from mirrorgate.metrics import Metrics
from mirrorgate.rules import CachePolicy, RuleSet
from mirrorgate.protocols import Head, Protocol, RewriteContext
from mirrorgate.trace import HEADER, Hop, Trace
from mirrorgate.upstream import Opened, UpstreamClient, UpstreamFailure
from mirrorgate.walk import Plan, Walked, response_headers, walk

log = logging.getLogger("mirrorgate.relay")

# Request headers with which the Router hands a flow over.
TARGET_HEADER = "X-Mirrorgate-Target"
SECRET_HEADER = "X-Mirrorgate-Secret"
FLOW_HEADER = "X-Mirrorgate-Flow"

CHUNK = 256 * 1024
# Bodies up to this size are kept in memory once read (the hot set), within HOT_BYTES.
HOT_ENTRY_MAX = 256 * 1024
HOT_BYTES = 64 * 1024 * 1024
STALE_WARNING = '110 - "Response is Stale"'
_COUNTERS = {"HIT": "hits", "STALE": "stale", "REVALIDATED": "revalidated"}
# The reason phrases aiohttp sends.
REASONS = {s.value: s.phrase for s in HTTPStatus}
MAX_CHECK_DOCUMENT = 64 * 1024 * 1024
MAX_OBSERVED = 1024 * 1024
INLINE_DECODE = 1024 * 1024


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    revalidated: int = 0
    bytes_from_cache: int = 0
    bytes_fetched: int = 0

    def as_dict(self) -> dict:
        served = self.hits + self.stale + self.revalidated
        lookups = served + self.misses
        return {**self.__dict__, "hit_ratio": round(served / lookups, 4) if lookups else None}


class TrustedFetch:
    """A protocol's small fetches (mirrorgate.protocols.Trusted), with its rule's timeouts."""

    def __init__(self, relay: "RelayServer", rule) -> None:
        self._relay, self._rule = relay, rule

    async def __call__(self, url: str, headers: dict) -> bytes | None:
        return await self._relay._fetch(self._rule, url, headers)

    async def head(self, url: str, headers: dict) -> Head | None:
        try:
            opened = await self._relay._client().open("HEAD", url, headers, self._rule.timeouts,
                                                      follow_redirects=False)
        except UpstreamFailure as e:
            log.info("%s: HEAD %s failed: %s", self._rule.name, url, e)
            return None
        opened.release()
        return Head(opened.status, {k.lower(): v for k, v in opened.headers.items()})


def _rewrite_at(proto: Protocol, path: str, ctx: RewriteContext, page_url: str, content_type: str,
                body: bytes) -> bytes | None:
    return proto.rewrite(path, content_type, body, replace(ctx, page_url=page_url))


def _whole_body_request(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """A range request's headers, asking for the whole body instead. A client that asked
    for a range and named no content-coding expects raw bytes: Ruby's Net::HTTP, for one,
    decodes only a coding it offered itself, and offers none with a Range."""
    out = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in ("range", "if-range"))
    out.setdefault("Accept-Encoding", "identity")
    return out


@dataclass(frozen=True)
class Answer:
    """A whole response that the proxy sends itself, without the hop to the relay."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def client_headers(headers: Iterable[tuple[str, str]], trace: Trace) -> list[tuple[str, str]]:
    """Response headers as a client gets them: without Mirrorgate's own bookkeeping, with
    the trace in one `X-Mirrorgate` header, in the place of the first an upstream sent."""
    out, placed = [], False
    for k, v in headers:
        name = k.lower()
        if name == "x-mirrorgate" and not placed:
            out.append((HEADER, trace.header()))
            placed = True
        elif name != "x-mirrorgate" and not name.startswith("x-mirrorgate-"):
            out.append((k, v))
    return out if placed else out + [(HEADER, trace.header())]


def as_the_relay_sends(status: int, method: str, headers: list[tuple[str, str]],
                       length: int) -> list[tuple[str, str]]:
    """`headers` with what aiohttp adds to every relay response that lacks them, so that a
    hit the proxy answers itself reads the same as one the relay served."""
    names = {k.lower() for k, _ in headers}
    out = list(headers)
    empty = method == "HEAD" or status in (204, 304) or 100 <= status < 200
    if not empty and length and "content-type" not in names:
        out.append(("Content-Type", "application/octet-stream"))
    if "date" not in names:
        out.append(("Date", formatdate(usegmt=True)))
    if "server" not in names:
        out.append(("Server", SERVER_SOFTWARE))
    return out


def _stored(store: Store, cache: CachePolicy, url: str, cls: Class,
            headers: Mapping[str, str]) -> tuple[str, Entry | None, Freshness | None]:
    """The cache key a request is served by, its entry and that entry's freshness: one
    place for the relay and for hits the proxy answers itself, so both find the same."""
    key = policy.cache_key(url, cls, cache, headers)
    entry = store.lookup(key)
    return key, entry, policy.freshness(entry, cache, time.time()) if entry is not None else None


@dataclass(frozen=True)
class Handover:
    """What the Router routed a flow by: its trace, and the rules and profile in force
    then. The relay serves the flow by the same rules, so that a reload between the
    hand-over and here cannot change a request's rule half-way (or fail it)."""

    trace: Trace
    rules: RuleSet
    profile: str


class RelayServer:
    def __init__(self, rules: Callable[[], tuple[RuleSet, str]], client: Callable[[], UpstreamClient],
                 circuits: CircuitBoard, store: Callable[[], Store | None] = lambda: None) -> None:
        self._rules = rules
        self._client = client
        self._store = store
        self.circuits = circuits
        self.secret = secrets.token_urlsafe(24)
        # Traces the Router created for flows on their way here; the relay fills them in.
        self.pending: TTLCache[str, Handover] = TTLCache(maxsize=100_000, ttl=300)
        self.fills: dict[str, Fill] = {}
        self.stats = CacheStats()
        self.metrics = Metrics()
        self.metrics.watch(circuits.snapshot, self._usage)
        self.protocols = protocols.registry()
        self._hot: LRUCache[tuple[str, float], bytes] = LRUCache(maxsize=HOT_BYTES, getsizeof=len)
        self._tasks: set[asyncio.Task] = set()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        # At shutdown, in-flight downloads are cut after a moment rather than awaited.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()

    async def stop(self) -> None:
        self.ready.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._runner:
            await self._runner.cleanup()

    def _usage(self) -> dict:
        store = self._store()
        return store.usage() if store is not None else {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get(SECRET_HEADER, ""), self.secret):
            return web.Response(status=403, text="This port is Mirrorgate's internal relay, not a proxy.\n")
        target = request.headers.get(TARGET_HEADER, "")
        handover = self.pending.pop(request.headers.get(FLOW_HEADER, ""), None)
        ruleset, profile = (handover.rules, handover.profile) if handover else self._rules()
        parts = urlsplit(target)
        path = target[len(f"{parts.scheme}://{parts.netloc}"):] or "/"
        default_port = 443 if parts.scheme == "https" else 80
        found = routing.route(ruleset, routing.RequestFacts(
            request.method, parts.scheme, parts.hostname or "", parts.port or default_port, path, False))
        if found is None or found.kind != "relay":
            # Only for a flow whose hand-over was forgotten (after 300 s), after a reload
            # that removed its rule.
            return web.Response(status=502, text=f"Mirrorgate: no rule routes {target} any more.\n")
        trace = handover.trace if handover else Trace(found.rule.name)
        return await self._serve(request, found, path, profile, trace)

    def answer_hit(self, method: str, headers: Mapping[str, str], route: routing.Route, path: str,
                   trace: Trace) -> Answer | None:
        """A fresh hit with a small body (or none), answered whole from memory so that the
        proxy can send it without the hop to the relay: the hop costs more than the rest
        of a hit, and HTTP/2 clients pay a new connection to the relay on every request.
        `headers` are the client's, lower-cased. None leaves the request to the relay,
        which serves everything else (misses, stale entries, large bodies, protocols that
        resolve a name or answer themselves) and decides every hit in the same way."""
        store, rule = self._store(), route.rule
        if store is None or rule.cache is None or method not in ("GET", "HEAD"):
            return None
        remainder = route.prefix.remainder(routing.split_query(path)[0]) or "/"
        proto = self.protocols.get(rule.protocol) if rule.protocol else None
        if proto is not None and (type(proto).resolve is not Protocol.resolve
                                  or proto.local_answer(remainder) is not None
                                  or ("range" in headers and proto.serves_whole(remainder))):
            return None
        cls = policy.classify(rule.cache, remainder)
        if cls is None:
            return None
        _, entry, state = _stored(store, rule.cache, f"{route.prefix.origin}{path}", cls, headers)
        if state != "fresh":
            return None
        plan = policy.plan_hit(entry, method, headers)
        if plan is None or (plan.length and entry.size > HOT_ENTRY_MAX):
            return None
        body = b""
        if plan.length:
            try:
                fd = store.open(entry)
            except FileNotFoundError:
                return None
            try:
                body = self._small_body(fd, entry)[plan.start:plan.start + plan.length]
            finally:
                os.close(fd)
        trace.cache = "HIT"
        self.stats.hits += 1
        self.stats.bytes_from_cache += plan.length
        store.touch(entry.key)
        headers = as_the_relay_sends(plan.status, method, client_headers(plan.headers, trace), plan.length)
        return Answer(plan.status, REASONS.get(plan.status, ""), headers, body)

    # ---- dispatch --------------------------------------------------------------------------

    async def _serve(self, request: web.Request, route: routing.Route, path: str, profile: str,
                     trace: Trace) -> web.StreamResponse:
        store = self._store()
        rule = route.rule
        bare, query = routing.split_query(path)
        remainder = route.prefix.remainder(bare) or "/"
        url = f"{route.prefix.origin}{path}"
        proto = self.protocols.get(rule.protocol) if rule.protocol else None
        if proto is not None:
            lowered = {k.lower(): v for k, v in request.headers.items()}
            resolved = await proto.resolve(remainder, request.method, lowered, url, TrustedFetch(self, rule))
            if resolved is not None and resolved != remainder:
                # Served as the immutable content the mutable name stands for right now.
                remainder, path = resolved, route.prefix.path + resolved + query
                url = f"{route.prefix.origin}{path}"
        if proto is not None and (local := proto.local_answer(remainder)) is not None:
            trace.route = "answered by Mirrorgate"
            out = self._response(local.status, local.headers + (("Content-Length", str(len(local.body))),), trace)
            await out.prepare(request)
            await out.write(local.body if request.method != "HEAD" else b"")
            await out.write_eof()
            return out
        if proto is not None and "Range" in request.headers and proto.serves_whole(remainder):
            request = request.clone(headers=_whole_body_request(request.headers))
        options = dict(rule.protocol_options)
        expect = None
        if proto is not None and proto.checks(remainder):
            expect = partial(proto.expect, remainder, url, options, TrustedFetch(self, rule))
        rewrite = None
        if proto is not None and proto.wants_rewrite(remainder):
            ctx = RewriteContext("", route.prefix, options)
            rewrite = partial(_rewrite_at, proto, remainder, ctx)
        cls = policy.classify(rule.cache, remainder) if store else None
        held = expect is not None or rewrite is not None
        if store is None or (cls is None and not held):
            return await self._pass(request, route, path, profile, trace, None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if cls is not None and rule.cache is not None:
            key, entry, state = _stored(store, rule.cache, url, cls, headers)
        else:
            key, entry, state = f"{url}\naccept: {headers.get('accept', '')}", None, None  # checked, never kept
        if state == "fresh":
            answered = await self._answer(request, store, entry, trace, "HIT")
            if answered is not None:
                return answered
        elif state == "expired":
            store.delete(key)
            entry = None
        if cls is not None:
            trace.cache = "MISS"
        if request.method != "GET" or "range" in headers:
            # HEAD and ranges never start a fill: they would not give the whole body. A
            # range of a body that must be checked cannot be checked: only the origin's.
            return await self._pass(request, route, path, profile, trace, entry,
                                    trusted_only=expect is not None and request.method == "GET")
        fill = self.fills.get(key)
        if fill is None:
            fill = self.fills[key] = Fill(key)
            req = FillRequest(key, url, cls, path, dict(request.headers), entry, expect, rewrite)
            self._spawn(fill, run_fill(fill, req, store, self._walker(route, path, profile, "GET"),
                                       partial(self._bad_bytes, rule)))
        return await self._from_fill(request, store, fill, route, path, profile, trace)

    async def _fetch(self, rule, url: str, headers: dict) -> bytes | None:
        """A small document (a packument, a checksum record) straight from a trusted
        upstream, for a protocol's checks; None if it cannot be had."""
        try:
            opened = await self._client().open("GET", url, {"Accept-Encoding": "identity", **headers},
                                               rule.timeouts, follow_redirects=True)
        except UpstreamFailure as e:
            log.info("%s: could not fetch %s for a check: %s", rule.name, url, e)
            return None
        try:
            if opened.status != 200:
                return None
            body = bytearray()
            async for chunk in opened.body():
                body += chunk
                if len(body) > MAX_CHECK_DOCUMENT:
                    return None
            coding = opened.headers.get("Content-Encoding", "")
            if coding in ("", "identity"):
                await self._keep_fetched(rule, url, response_headers(opened, False), bytes(body))
            if len(body) > INLINE_DECODE:  # a big index: decoding it would stall every client
                return await asyncio.to_thread(codings.decode, bytes(body), coding)
            return codings.decode(bytes(body), coding)
        except (UpstreamFailure, ValueError, zlib.error):
            return None
        finally:
            opened.release()

    async def _keep_fetched(self, rule, url: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """Keep a document a check fetched from the rule's own origin when the rule keeps
        it as an artifact (a Maven checksum file, read to check the jar, is the next thing
        Maven asks for): the client then gets a hit, not a second trip to the origin.
        Artifacts only: they are keyed by URL alone and never revalidated."""
        store = self._store()
        if store is None or rule.cache is None or "?" in url or url in self.fills:
            return
        for prefix in rule.match:
            below = prefix.remainder(url[len(prefix.origin):]) if url.startswith(prefix.origin + "/") else None
            if below:
                break
        else:
            return
        if (policy.classify(rule.cache, below) != "artifact" or not policy.storable(200, headers, from_origin=True)
                or store.lookup(url) is not None):
            return
        writer = store.begin(len(body))
        if writer is None:
            return
        try:
            writer.write(body)
            await asyncio.to_thread(writer.sync)
            now = time.time()
            store.publish(writer, Entry(url, url, "artifact", 200, tuple(headers), len(body), now, now,
                                        str(Hop("origin", prefix.url))))
        except OSError as e:
            log.info("%s: could not keep %s: %s", rule.name, url, e)
            writer.discard()
        finally:
            writer.close()

    def _bad_bytes(self, rule, hop: Hop) -> None:
        if hop.kind == "mirror":
            self.circuits.get(hop.url, rule.circuit).failed(time.monotonic())

    def _spawn(self, fill: Fill, work) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                # In the same step as publishing: later requests find the published entry;
                # until now they joined this fill and read its complete file.
                if self.fills.get(fill.key) is fill:
                    del self.fills[fill.key]
                fill.retire()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _walker(self, route: routing.Route, path: str, profile: str, method: str):
        def observe(hop: Hop, seconds: float | None, failure: str | None) -> None:
            self.metrics.attempt(route.rule.name, str(hop), seconds, failure)

        plan = Plan(observe=observe)
        proto = self.protocols.get(route.rule.protocol) if route.rule.protocol else None
        if proto is not None:
            bare, query = routing.split_query(path)
            rest = route.prefix.remainder(bare) or "/"
            mapped = proto.mirror_path(rest)
            trusted = TrustedFetch(self, route.rule)

            async def authorize(mirror_url: str, below: str, challenge: str | None) -> dict[str, str] | None:
                return await proto.authorize(mirror_url, below, challenge, trusted)

            def rewrite_headers(mirror_url: str, page_url: str, status: int,
                                headers: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
                return proto.rewrite_headers(rest, status, headers, page_url, mirror_url, route.prefix.url)

            plan = Plan(mirror_path=route.prefix.path + mapped + query if mapped != rest else None,
                        origin_first=proto.prefers_origin(rest), authorize=authorize, observe=observe,
                        follow_mirror_redirects=proto.follows_redirects(rest, method),
                        rewrite_headers=rewrite_headers)

        async def go(headers: Mapping[str, str], extra: Mapping[str, str],
                     exclude: frozenset[str] = frozenset()) -> Walked:
            return await walk(self._client(), self.circuits, route.rule, route.prefix, path, profile, method,
                              headers, extra, exclude, plan)
        return go

    # ---- without the cache ---------------------------------------------------------------

    async def _pass(self, request: web.Request, route: routing.Route, path: str, profile: str,
                    trace: Trace, stale: Entry | None, trusted_only: bool = False) -> web.StreamResponse:
        exclude = frozenset({ALL_MIRRORS}) if trusted_only else frozenset()
        w = await self._walker(route, path, profile, request.method)(request.headers, {}, exclude)
        trace.fallbacks += w.fallbacks
        trace.skipped += w.skipped
        store = self._store()
        if stale is not None and store is not None and (w.opened is None or w.opened.status >= 500):
            answered = await self._answer(request, store, stale, trace, "STALE")
            if answered is not None:
                if w.opened is not None:
                    w.opened.release()
                return answered
        if w.opened is None or w.hop is None:
            return self._all_failed(trace, w.failures)
        trace.upstream = w.hop
        proto = self.protocols.get(route.rule.protocol) if route.rule.protocol else None
        rest = route.prefix.remainder(routing.split_query(path)[0]) or "/"
        if proto is not None and w.hop.kind == "origin" and proto.observes(rest):
            return await self._observed(request, w.opened, proto, rest, trace)
        return await self._stream(request, w.opened, w.hop.kind == "mirror", trace)

    async def _observed(self, request: web.Request, opened: Opened, proto: Protocol, path: str,
                        trace: Trace) -> web.StreamResponse:
        """A small origin response that the protocol reads (a token) before the client does."""
        try:
            body = bytearray()
            async for chunk in opened.body():
                body += chunk
                if len(body) > MAX_OBSERVED:
                    raise UpstreamFailure("protocol_error", f"an observed response exceeds {MAX_OBSERVED} bytes")
        except UpstreamFailure as f:
            opened.release()
            return self._all_failed(trace, [f"origin {f.kind} ({f.detail})"])
        headers = response_headers(opened, False)
        opened.release()
        try:
            decoded = codings.decode(bytes(body), opened.headers.get("Content-Encoding", ""))
            proto.observe(path, {k.lower(): v for k, v in request.headers.items()}, opened.status, decoded)
        except (ValueError, zlib.error) as e:
            log.info("%s: could not read %s: %s", trace.rule, path, e)
        out = self._response(opened.status, headers, trace, opened.reason)
        out.content_length = len(body)
        await out.prepare(request)
        await out.write(bytes(body) if request.method != "HEAD" else b"")
        await out.write_eof()
        return out

    async def _stream(self, request: web.Request, opened: Opened, from_mirror: bool,
                      trace: Trace) -> web.StreamResponse:
        out = self._response(opened.status, response_headers(opened, from_mirror), trace, opened.reason)
        try:
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in opened.body():
                    await out.write(chunk)
            await out.write_eof()
        except UpstreamFailure as f:
            self._abort(request, trace, f"aborted ({f.kind})", str(f))
        except (ConnectionResetError, asyncio.CancelledError):
            trace.route = "client went away"
            raise
        finally:
            opened.release()
        return out

    # ---- from the cache ------------------------------------------------------------------

    async def _from_fill(self, request: web.Request, store: Store, fill: Fill, route: routing.Route, path: str,
                         profile: str, trace: Trace) -> web.StreamResponse:
        fill.join()
        try:
            # Shielded: this client going away must not cancel the fill's outcome for others.
            start = await asyncio.shield(fill.start)
            trace.fallbacks += fill.fallbacks
            trace.skipped += fill.skipped
            if isinstance(start, Answered):
                trace.upstream = start.upstream
                answered = await self._answer(request, store, start.entry, trace, start.state)
                if answered is not None:
                    return answered
                return await self._pass(request, route, path, profile, trace, None)
            if isinstance(start, Failed):
                return self._all_failed(trace, start.failures)
            if isinstance(start, Direct):
                opened = start.claim()
                if opened is None:
                    # No room on disk to check bytes: fetch alone, and from the origin only.
                    trace.fallbacks, trace.skipped = [], []
                    return await self._pass(request, route, path, profile, trace, None, trusted_only=True)
                trace.upstream = start.upstream
                return await self._stream(request, opened, start.upstream.kind == "mirror", trace)
            assert isinstance(start, Streamed)
            coding = next((v for k, v in start.headers if k.lower() == "content-encoding"), None)
            if not policy.encoding_acceptable(request.headers.get("Accept-Encoding"), coding):
                # The fill is in a coding this client cannot read (the key leaves
                # Accept-Encoding out, so that most clients share one entry).
                trace.fallbacks, trace.skipped = [], []
                return await self._pass(request, route, path, profile, trace, None)
            if trace.cache:
                self.stats.misses += 1
            trace.upstream = start.upstream
            out = self._response(start.status, start.headers, trace, start.reason)
            await out.prepare(request)
            offset = 0
            while True:
                # The last byte waits for the fill to end (publication included), so that
                # a client never completes before the entry exists.
                available = fill.written if fill.done else fill.written - 1
                if offset < available:
                    data = fill.read(offset, min(CHUNK, available - offset))
                    offset += len(data)
                    await out.write(data)
                elif fill.done:
                    break
                else:
                    await fill.wait_beyond(offset)
            self.stats.bytes_fetched += offset
            if fill.error:
                self._abort(request, trace, "aborted (fill failed)", fill.error)
            else:
                await out.write_eof()
            return out
        except (ConnectionResetError, asyncio.CancelledError):
            trace.route = "client went away"
            raise
        finally:
            fill.leave()

    async def _answer(self, request: web.Request, store: Store, entry: Entry, trace: Trace,
                      state: str) -> web.StreamResponse | None:
        """Serve a stored entry, or None if it cannot answer this request."""
        plan = policy.plan_hit(entry, request.method, {k.lower(): v for k, v in request.headers.items()})
        if plan is None:
            return None
        fd = None
        if plan.length:
            try:
                fd = store.open(entry)
            except FileNotFoundError:
                return None
        trace.cache = state
        counter = _COUNTERS[state]
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        extra = (("Warning", STALE_WARNING),) if state == "STALE" else ()
        out = self._response(plan.status, plan.headers + extra, trace)
        try:
            await out.prepare(request)
            if fd is not None:
                await self._send_body(out, fd, entry, plan.start, plan.length)
            await out.write_eof()
        finally:
            if fd is not None:
                os.close(fd)
        store.touch(entry.key)
        return out

    async def _send_body(self, out: web.StreamResponse, fd: int, entry: Entry, start: int, length: int) -> None:
        if entry.size <= HOT_ENTRY_MAX:
            await out.write(self._small_body(fd, entry)[start:start + length])
        else:
            offset, end = start, start + length
            while offset < end:
                # A cold read of a large body may wait on the disk: keep it off the event loop.
                data = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
                if not data:
                    raise OSError(f"cached body of {entry.url} is shorter than indexed")
                offset += len(data)
                await out.write(data)
        self.stats.bytes_from_cache += length

    def _small_body(self, fd: int, entry: Entry) -> bytes:
        hot_key = (entry.name, entry.stored_at)
        body = self._hot.get(hot_key)
        if body is None:
            body = os.pread(fd, entry.size, 0)
            self._hot[hot_key] = body
        return body

    # ---- responses -----------------------------------------------------------------------

    @staticmethod
    def _response(status: int, headers, trace: Trace, reason: str | None = None) -> web.StreamResponse:
        out = web.StreamResponse(status=status, reason=reason or None)
        out.headers.extend(client_headers(headers, trace))
        return out

    @staticmethod
    def _abort(request: web.Request, trace: Trace, note: str, detail: str) -> None:
        # Headers are gone; the only honest signal left is a broken connection, so that
        # the client discards what it got instead of trusting a short body.
        log.warning("%s: body failed mid-way: %s", trace.rule, detail)
        trace.route = note
        if request.transport is not None:
            request.transport.abort()

    def _all_failed(self, trace: Trace, failures: list[str]) -> web.Response:
        timed_out = failures and " timeout " in failures[-1]
        status = 504 if timed_out else 502
        body = "Mirrorgate: every upstream failed for this request:\n" + "".join(f"  {f}\n" for f in failures)
        trace.route = "all upstreams failed"
        return web.Response(status=status, text=body, headers={HEADER: trace.header()})
