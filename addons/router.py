"""Sends each request that a rule owns to the relay, or straight to its origin when it
must not touch a mirror; streams everything else through untouched."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
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
            log.exception("could not route %s", flow.request.pretty_url)
            flow.response = http.Response.make(
                502, f"Mirrorgate could not route this request ({type(e).__name__}); see the proxy's log.\n",
                {"Content-Type": "text/plain; charset=utf-8"})

    async def _route(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        facts = routing.RequestFacts(
            # As sent: methods are case-sensitive, and mitmproxy's `method` upper-cases
            # ("get" is no GET, and must not reach the relay as one).
            method=req.data.method.decode("ascii", "replace"), scheme=req.scheme, host=req.host, port=req.port, path=req.path,
            has_credentials=any(h in req.headers for h in routing.CREDENTIAL_HEADERS),
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
        try:
            await asyncio.wait_for(self.relay.ready.wait(), RELAY_READY_TIMEOUT)
        except TimeoutError:
            flow.response = http.Response.make(503, b"Mirrorgate is still starting.\n")
            return
        target = f"{found.prefix.origin}{req.path}"
        self.relay.pending[flow.id] = Handover(trace, ruleset, profile)
        req.url = f"{self.relay.base_url}{req.path}"
        if flow.server_conn.via is not None:
            # Upstream mode: the hand-over to the relay is local, never via the parent
            # proxy (the relay reaches upstreams through the parent itself). A new server
            # connection object, as the current one may be shared by the client's other
            # requests.
            flow.server_conn = connection.Server(address=(req.host, req.port), via=None)
            req.authority = ""
            req.headers.pop("Proxy-Authorization", None)  # the parent's, added by upstream_auth
        req.headers[TARGET_HEADER] = target
        req.headers[SECRET_HEADER] = self.relay.secret
        req.headers[FLOW_HEADER] = flow.id

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        n = note(flow)
        if n is None:
            return
        flow.response.stream = n.count
        if n.route in ("origin", "private") and n.trace is not None:
            flow.response.headers[HEADER] = n.trace.header()
