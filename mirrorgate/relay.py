"""The relay: a loopback HTTP server inside mitmproxy's event loop that fetches a routed
request from the first healthy mirror, falls back through the others to the origin
before the client has seen a byte, and streams the winning body back.

mitmproxy cannot retry a flow, time out an upstream, or stream a body that an addon
produced (docs/architecture.md), so the Router addon points routed flows at this
server and lets mitmproxy stream its answer like any upstream's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web
from cachetools import TTLCache

from mirrorgate import routing
from mirrorgate.circuit import CircuitBoard
from mirrorgate.rules import Prefix, RuleSet
from mirrorgate.trace import HEADER, Hop, Trace
from mirrorgate.upstream import HOP_BY_HOP, Opened, UpstreamClient, UpstreamFailure

log = logging.getLogger("mirrorgate.relay")

# Request headers with which the Router hands a flow over.
TARGET_HEADER = "X-Mirrorgate-Target"
SECRET_HEADER = "X-Mirrorgate-Secret"
FLOW_HEADER = "X-Mirrorgate-Flow"

# Response headers that speak for the host that sent them; from a mirror they would be
# taken as the origin's word.
MIRROR_ONLY_HEADERS = frozenset({"set-cookie", "strict-transport-security", "alt-svc", "public-key-pins"})


def forward_headers(headers, to_mirror: bool) -> dict[str, str]:
    """The client's request headers as an upstream should see them."""
    listed = {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}
    out: dict[str, str] = {}
    for name, value in headers.items():
        n = name.lower()
        if n in HOP_BY_HOP or n in listed or n.startswith("x-mirrorgate-"):
            continue
        if to_mirror and n in routing.CREDENTIAL_HEADERS:
            continue
        out[name] = value if name not in out else f"{out[name]}, {value}"
    return out


def response_headers(opened: Opened, from_mirror: bool) -> list[tuple[str, str]]:
    listed = {t.strip().lower() for v in opened.headers.getall("Connection", []) for t in v.split(",")}
    drop = HOP_BY_HOP | listed | (MIRROR_ONLY_HEADERS if from_mirror else frozenset())
    return [(k, v) for k, v in opened.headers.items() if k.lower() not in drop]


class RelayServer:
    def __init__(self, rules: Callable[[], tuple[RuleSet, str]], client: Callable[[], UpstreamClient],
                 circuits: CircuitBoard) -> None:
        self._rules = rules
        self._client = client
        self.circuits = circuits
        self.secret = secrets.token_urlsafe(24)
        # Traces the Router created for flows on their way here; the relay fills them in.
        self.pending: TTLCache[str, Trace] = TTLCache(maxsize=100_000, ttl=300)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()

    async def stop(self) -> None:
        self.ready.clear()
        if self._runner:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get(SECRET_HEADER, ""), self.secret):
            return web.Response(status=403, text="This port is Mirrorgate's internal relay, not a proxy.\n")
        target = request.headers.get(TARGET_HEADER, "")
        trace = self.pending.pop(request.headers.get(FLOW_HEADER, ""), None)
        ruleset, profile = self._rules()
        parts = urlsplit(target)
        path = target[len(f"{parts.scheme}://{parts.netloc}"):] or "/"
        default_port = 443 if parts.scheme == "https" else 80
        found = routing.route(ruleset, routing.RequestFacts(
            request.method, parts.scheme, parts.hostname or "", parts.port or default_port, path, False))
        if found is None or found.kind != "relay":
            # Only after a rules reload that removed the rule between hand-over and here.
            return web.Response(status=502, text=f"Mirrorgate: no rule routes {target} any more.\n")
        if trace is None:
            trace = Trace(found.rule.name)
        return await self._serve(request, found, path, profile, trace)

    async def _serve(self, request: web.Request, route: routing.Route, path: str, profile: str,
                     trace: Trace) -> web.StreamResponse:
        rule, origin = route.rule, route.prefix
        candidates: list[tuple[Hop, Prefix]] = []
        now = time.monotonic()
        for mirror in rule.mirrors_for(profile):
            hop = Hop("mirror", mirror.url)
            if self.circuits.get(mirror.url, rule.circuit).admit(now):
                candidates.append((hop, mirror))
            else:
                trace.skipped.append(hop)
        candidates.append((Hop("origin", origin.url), origin))

        client = self._client()
        failures: list[str] = []
        for hop, upstream in candidates:
            is_mirror = hop.kind == "mirror"
            circuit = self.circuits.get(upstream.url, rule.circuit) if is_mirror else None
            url = routing.map_url(origin, upstream, path)
            started = time.monotonic()
            verdict_given = False
            try:
                try:
                    opened = await client.open(request.method, url, forward_headers(request.headers, is_mirror),
                                               rule.timeouts, follow_redirects=is_mirror)
                    outcome: routing.Outcome = opened.status
                except UpstreamFailure as f:
                    opened, outcome = None, f.kind
                    failures.append(f"{hop} {f.kind} ({f.detail})")
                if circuit is not None:
                    if opened is None or routing.counts_against_mirror(outcome):
                        circuit.failed(time.monotonic())
                    else:
                        circuit.succeeded(time.monotonic(), time.monotonic() - started)
                    verdict_given = True
                if is_mirror and routing.should_fall_back(rule, outcome):
                    if opened is not None:
                        failures.append(f"{hop} {outcome}")
                        opened.release()
                    trace.fallbacks.append((hop, str(outcome)))
                    log.info("%s: %s failed for %s (%s); falling back", rule.name, hop, url, outcome)
                    continue
                if opened is None:
                    break  # the origin failed, or the rule does not fall back on this failure
                trace.upstream = hop
                return await self._stream(request, opened, is_mirror, trace)
            finally:
                if circuit is not None and not verdict_given:
                    circuit.abandoned()
        return self._all_failed(trace, failures)

    async def _stream(self, request: web.Request, opened: Opened, from_mirror: bool,
                      trace: Trace) -> web.StreamResponse:
        out = web.StreamResponse(status=opened.status, reason=opened.reason)
        for k, v in response_headers(opened, from_mirror):
            out.headers.add(k, v)
        out.headers[HEADER] = trace.header()
        try:
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in opened.body():
                    await out.write(chunk)
            await out.write_eof()
        except UpstreamFailure as f:
            # Headers are gone; the only honest signal left is a broken connection, so
            # that the client discards what it got instead of trusting a short body.
            log.warning("%s: upstream failed mid-body: %s", trace.rule, f)
            trace.route = f"aborted ({f.kind})"
            if request.transport is not None:
                request.transport.abort()
        except (ConnectionResetError, asyncio.CancelledError):
            trace.route = "client went away"
            raise
        finally:
            opened.release()
        return out

    def _all_failed(self, trace: Trace, failures: list[str]) -> web.Response:
        timed_out = failures and " timeout " in failures[-1]
        status = 504 if timed_out else 502
        body = "Mirrorgate: every upstream failed for this request:\n" + "".join(f"  {f}\n" for f in failures)
        trace.route = "all upstreams failed"
        return web.Response(status=status, text=body, headers={HEADER: trace.header()})
