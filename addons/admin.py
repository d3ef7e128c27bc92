"""Answers Mirrorgate's own management requests, sent through the proxy to the host
`mirrorgate`:

    curl -x http://127.0.0.1:8080 http://mirrorgate/cache                      # size, entries, hit ratio
    curl -x http://127.0.0.1:8080 -X POST 'http://mirrorgate/cache/purge?url=URL'
    curl -x http://127.0.0.1:8080 -X POST 'http://mirrorgate/cache/purge?prefix=URL-PREFIX'
    curl -x http://127.0.0.1:8080 -X POST 'http://mirrorgate/cache/purge?all=1'
    curl -x http://127.0.0.1:8080 -X POST http://mirrorgate/rules/reload       # read the rules file now
    curl -x http://127.0.0.1:8080 http://mirrorgate/metrics                    # Prometheus
    http://mirrorgate/status in a browser whose proxy is Mirrorgate             # the status page

Only clients in `admin_clients` may use it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from mitmproxy import ctx, exceptions, http

from addons.options import add_option

from addons.cache import Cache
from addons.rules import Rules
from mirrorgate import access, metrics, status
from mirrorgate.relay import RelayServer

ADMIN_HOST = "mirrorgate"


def _json(status: int, body: dict) -> http.Response:
    return http.Response.make(status, json.dumps(body, indent=2) + "\n", {"Content-Type": "application/json"})


class Admin:
    def __init__(self, cache: Cache, relay: RelayServer, rules: Rules) -> None:
        self.cache = cache
        self.relay = relay
        self.rules = rules
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    def load(self, loader) -> None:
        add_option(loader, "admin_clients", Sequence[str], ["127.0.0.0/8", "::1/128"],
                          "Networks (CIDR) whose clients may use the management requests at http://mirrorgate/.")

    def configure(self, updated: set[str]) -> None:
        if "admin_clients" not in updated:
            return
        networks = []
        for text in ctx.options.admin_clients:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as e:
                raise exceptions.OptionsError(f"admin_clients: {text!r} is not a network: {e}") from None
        self.networks = networks

    def _allowed(self, flow: http.HTTPFlow) -> bool:
        return access.allowed(access.client_address(flow.client_conn.peername), self.networks)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.request.host != ADMIN_HOST:
            return
        if not self._allowed(flow):
            flow.response = _json(403, {"error": "this client may not manage Mirrorgate (see admin_clients)"})
            return
        if urlsplit(flow.request.path).path == "/rules/reload":
            flow.response = await self.reload_rules(flow.request.method)
            return
        flow.response = self.answer(flow.request.method, flow.request.path)

    async def reload_rules(self, method: str) -> http.Response:
        """Read the rules file now; 422 with the file:line: key: problem message if it is
        refused (the rules in force stay)."""
        if method != "POST":
            return _json(405, {"error": "use POST"})
        error = await self.rules.reload("POST /rules/reload")
        ruleset, profile = self.rules.active()
        body = {"reloaded": error is None, "rules": ruleset.source, "count": len(ruleset.rules), "profile": profile}
        return _json(200, body) if error is None else _json(422, {**body, "error": error})

    def answer(self, method: str, target: str) -> http.Response:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if parts.path in ("/metrics", "/status", "/"):
            if method not in ("GET", "HEAD"):
                return _json(405, {"error": "use GET"})
            if parts.path == "/metrics":
                return http.Response.make(200, self.relay.metrics.render(), {"Content-Type": metrics.CONTENT_TYPE})
            ruleset, profile = self.rules.active()
            page = status.render(ruleset, profile, self.relay.circuits.snapshot(), self.stats()["cache"],
                                 rules_error=self.rules.last_error)
            return http.Response.make(200, page, {"Content-Type": "text/html; charset=utf-8",
                                                  "Cache-Control": "no-store"})
        if parts.path == "/cache":
            if method != "GET":
                return _json(405, {"error": "use GET"})
            return _json(200, self.stats())
        if parts.path == "/cache/purge":
            if method != "POST":
                return _json(405, {"error": "use POST"})
            store = self.cache.current()
            if store is None:
                return _json(409, {"error": "the cache is off"})
            if "url" in query:
                return _json(200, {"purged": store.purge(url=query["url"][0])})
            if "prefix" in query:
                return _json(200, {"purged": store.purge(prefix=query["prefix"][0])})
            if query.get("all") == ["1"]:
                return _json(200, {"purged": store.purge(everything=True)})
            return _json(400, {"error": "say what to purge: ?url=URL, ?prefix=URL-PREFIX or ?all=1"})
        return _json(404, {"error": f"no such management path {parts.path!r}",
                           "paths": ["GET /status", "GET /metrics", "GET /cache",
                                     "POST /cache/purge?url=|prefix=|all=1", "POST /rules/reload"]})

    def stats(self) -> dict:
        store = self.cache.current()
        usage = store.usage() if store is not None else {"entries": 0, "bytes": 0, "max_bytes": 0}
        return {"cache": {"enabled": store is not None and store.max_size > 0,
                          "dir": str(store.root) if store else None,
                          **usage, **self.relay.stats.as_dict()}}
