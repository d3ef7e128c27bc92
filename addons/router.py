"""Sends each request that a rule owns to the relay, or straight to its origin when it
must not touch a mirror; streams everything else through untouched."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from mitmproxy import connection, http

from addons.rules import Rules
from mirrorgate import routing
from mirrorgate.relay import FLOW_HEADER, SECRET_HEADER, TARGET_HEADER, Handover, RelayServer
from mirrorgate.trace import HEADER, Hop, Trace

log = logging.getLogger("mirrorgate.router")

# How long a request waits for the relay to come up at start-up.
RELAY_READY_TIMEOUT = 10.0


@dataclass
class FlowNote:
    """Mirrorgate's notes on a flow, read by the access log."""

    route: str  # "relay" | "origin" | "reject" | "other"
    trace: Trace | None = None
    bytes: int = field(default=0)
    # A flow for the relay, until it is handed over or answered: its route and path.
    for_relay: tuple[routing.Route, str] | None = None

    def count(self, chunk: bytes) -> bytes:
        self.bytes += len(chunk)
        return chunk


def note(flow: http.HTTPFlow) -> FlowNote | None:
    return flow.metadata.get("mirrorgate")


class Router:
    def __init__(self, rules: Rules, relay: RelayServer) -> None:
        self.rules = rules
        self.relay = relay

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        try:
            await self._route(flow)
        except Exception as e:  # noqa: BLE001 - fail closed: an unrouted flow would go out as it is
            self._refuse(flow, e)

    def request(self, flow: http.HTTPFlow) -> None:
        n = note(flow)
        if n is None or n.for_relay is None or flow.response or flow.error:
            return
        try:
            if not self._answer_hit(flow, n):
                self._hand_over(flow, n)
        except Exception as e:  # noqa: BLE001 - fail closed, as above
            self._refuse(flow, e)

    @staticmethod
    def _refuse(flow: http.HTTPFlow, e: Exception) -> None:
        log.exception("could not route %s", flow.request.pretty_url)
        flow.response = http.Response.make(
            502, f"Mirrorgate could not route this request ({type(e).__name__}); see the proxy's log.\n",
            {"Content-Type": "text/plain; charset=utf-8"})

    async def _route(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        names = {k.lower() for k, _ in req.headers.fields}
        facts = routing.RequestFacts(
            # As sent: methods are case-sensitive, and mitmproxy's `method` upper-cases
            # ("get" is no GET, and must not reach the relay as one).
            method=req.data.method.decode("ascii", "replace"), scheme=req.scheme, host=req.host, port=req.port, path=req.path,
            has_credentials=any(h.encode() in names for h in routing.CREDENTIAL_HEADERS),
            header_problem=routing.header_problem(req.headers.fields),
        )
        ruleset, profile = self.rules.active()
        found = routing.route(ruleset, facts)
        if found is not None and found.kind == "origin" and found.reason == "credentials":
            # A registry token the proxy saw issued anonymously is no credential: the
            # protocol says so, and the relay keeps it from mirrors all the same.
            proto = self.relay.protocols.get(found.rule.protocol) if found.rule.protocol else None
            if proto is not None and proto.anonymous({k.lower(): v for k, v in req.headers.items()}):
                found = routing.route(ruleset, dataclasses.replace(facts, has_credentials=False))
        if found is None:
            flow.metadata["mirrorgate"] = FlowNote("other")
            req.stream = True
            return
        trace = Trace(found.rule.name)
        flow.metadata["mirrorgate"] = FlowNote(found.kind, trace)
        if found.kind == "reject":
            trace.route = f"rejected ({found.reason})"
            flow.response = http.Response.make(
                400, f"Mirrorgate refused this request: {found.reason}.\n",
                {"Content-Type": "text/plain; charset=utf-8", HEADER: trace.header()})
            return
        if found.kind == "origin":
            trace.upstream = Hop("origin", found.prefix.url)
            trace.route = f"origin-only ({found.reason})"
            req.stream = True
            return
        if found.kind == "private":
            # Straight to the private registry (or the origin), credentials and all; never
            # a mirror, never the shared cache.
            if found.registry is not None:
                trace.upstream = Hop("private", found.registry.url)
                req.url = routing.map_url(found.prefix, found.registry, req.path)
            else:
                trace.upstream = Hop("origin", found.prefix.url)
            trace.route = found.reason
            req.stream = True
            return
        if not self.relay.ready.is_set():  # wait_for costs a task and a timer: only at start-up
            try:
                await asyncio.wait_for(self.relay.ready.wait(), RELAY_READY_TIMEOUT)
            except TimeoutError:
                flow.response = http.Response.make(503, b"Mirrorgate is still starting.\n")
                return
        n = flow.metadata["mirrorgate"]
        n.for_relay = (found, req.path)
        self.relay.pending[flow.id] = Handover(trace, ruleset, profile)
        req.headers[TARGET_HEADER] = f"{found.prefix.origin}{req.path}"
        if req.stream:
            # A streamed body goes out before the `request` hook, where the others are
            # handed over.
            self._hand_over(flow, n)

    def _answer_hit(self, flow: http.HTTPFlow, n: FlowNote) -> bool:
        """Answers a small fresh hit here, as the relay would, without the hop to it. In
        the `request` hook so that it sees the request as the relay would, after
        mitmproxy's own request addons (anticache, modify_headers…)."""
        req = flow.request
        route, path = n.for_relay
        # As the relay reads them: names lower-cased, the last of repeated fields.
        headers = {k.decode("utf-8", "surrogateescape").lower(): v.decode("utf-8", "surrogateescape")
                   for k, v in req.headers.fields}
        answer = self.relay.answer_hit(req.data.method.decode("ascii", "replace"), headers, route, path, n.trace)
        if answer is None:
            return False
        n.for_relay = None
        self.relay.pending.pop(flow.id, None)
        now = time.time()
        fields = [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in answer.headers]
        flow.response = http.Response(b"HTTP/1.1", answer.status, answer.reason.encode("ascii", "replace"),
                                      http.Headers(fields), answer.body, None, now, now)
        return True

    def _hand_over(self, flow: http.HTTPFlow, n: FlowNote) -> None:
        req = flow.request
        _, path = n.for_relay
        n.for_relay = None
        req.url = f"{self.relay.base_url}{path}"
        if flow.server_conn.via is not None:
            # Upstream mode: the hand-over to the relay is local, never via the parent
            # proxy (the relay reaches upstreams through the parent itself). A new server
            # connection object, as the current one may be shared by the client's other
            # requests.
            flow.server_conn = connection.Server(address=(req.host, req.port), via=None)
            req.authority = ""
            req.headers.pop("Proxy-Authorization", None)  # the parent's, added by upstream_auth
        req.headers[SECRET_HEADER] = self.relay.secret
        req.headers[FLOW_HEADER] = flow.id

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        n = note(flow)
        if n is None:
            return
        flow.response.stream = n.count
        if n.route in ("origin", "private") and n.trace is not None:
            flow.response.headers[HEADER] = n.trace.header()
