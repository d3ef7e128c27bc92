"""Decides who may use the proxy, before anything else sees a request.

Sits in mitmproxy's addon chain just before its `proxyauth` (mirrorgate/cli.py puts it
there), and so before Mirrorgate's own addons:

- A client whose address is outside `client_allow` gets a 403 that names its address and
  the option; the chain stops there, so neither proxyauth nor the router nor any upstream
  sees the request. In proxy modes that carry no HTTP request to answer (SOCKS, reverse,
  transparent, WireGuard) such a client's connection is closed at once.
- When `proxyauth` is set, the credentials of each request are checked in a worker thread
  and the verdict is kept (mirrorgate/access.py), so that proxyauth's own synchronous
  check, which runs right after on the event loop, is answered from memory instead of
  stalling every other client for a bcrypt hash.

docs/access-control.md describes the options and how they combine with mitmproxy's own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.addons import proxyauth
from mitmproxy.proxy import mode_specs

from addons.options import add_option
from mirrorgate import access

log = logging.getLogger("mirrorgate.gate")

# Modes in which a refused client can be answered with an HTTP 403 (the same test
# proxyauth uses to choose between 407 and 401).
HTTP_PROXY_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode)
# Validators that cost nothing: caching them would only add a thread hop.
CHEAP = (proxyauth.AcceptAll, proxyauth.SingleUser)
# Client addresses whose verdict is kept: every request is checked, parsing an address costs.
VERDICTS_KEPT = 4096


class Gate:
    def __init__(self) -> None:
        self.networks = access.parse_networks(access.DEFAULT_CLIENT_ALLOW)
        self._verdicts: dict[object, bool] = {}  # peer host → allowed, for self.networks
        self.cache_ttl = access.ACCEPTED_TTL
        self._executor: ThreadPoolExecutor | None = None

    def load(self, loader) -> None:
        add_option(loader, "client_allow", Sequence[str], list(access.DEFAULT_CLIENT_ALLOW),
                   "Networks (CIDR, comma-separated or one per --set) whose clients may use the proxy; "
                   "others get a 403. Default: loopback only. 0.0.0.0/0,::/0 lets every address in.")
        add_option(loader, "proxyauth_cache", int, access.ACCEPTED_TTL,
                   "Seconds for which credentials that proxyauth accepted are remembered, so that a "
                   "bcrypt or LDAP check runs once per user in that time, in a worker thread. "
                   "0 turns the cache off (every request is checked on the event loop).")

    def configure(self, updated: set[str]) -> None:
        if "client_allow" in updated:
            try:
                self.networks = access.parse_networks(ctx.options.client_allow)
            except ValueError as e:
                raise exceptions.OptionsError(f"client_allow: {e}") from None
            self._verdicts = {}
        if "proxyauth_cache" in updated:
            if ctx.options.proxyauth_cache < 0:
                raise exceptions.OptionsError(
                    f"proxyauth_cache: {ctx.options.proxyauth_cache} is negative; give seconds, or 0 for no cache")
            self.cache_ttl = ctx.options.proxyauth_cache
            # Unwrapped now, wrapped again with the new lifetime by the next request.
            pa = ctx.master.addons.get("proxyauth")
            if pa is not None and isinstance(pa.validator, access.CachingValidator):
                pa.validator = pa.validator.inner

    def done(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- the allowlist -----------------------------------------------------------------

    def client_connected(self, client: connection.Client) -> None:
        # HTTP proxy clients are answered per request below, where a 403 can carry a body.
        # LocalMode is this machine's own traffic, which mitmproxy's block options trust too.
        if isinstance(client.proxy_mode, (*HTTP_PROXY_MODES, mode_specs.LocalMode)):
            return
        if not self._allowed(client.peername):
            log.warning("Client connection from %s closed: not in client_allow", access.client_address(client.peername))
            client.error = "Connection killed: client address not in client_allow."

    def _allowed(self, peername: tuple | None) -> bool:
        host = peername[0] if peername else None
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= VERDICTS_KEPT:
                self._verdicts.clear()
            verdict = self._verdicts[host] = access.allowed(access.client_address(peername), self.networks)
        return verdict

    def _admit(self, flow: http.HTTPFlow) -> None:
        if isinstance(flow.client_conn.proxy_mode, mode_specs.LocalMode):
            return
        if self._allowed(flow.client_conn.peername):
            return
        address = access.client_address(flow.client_conn.peername)
        log.warning("Refused %s %s from %s: not in client_allow", flow.request.method,
                    flow.request.pretty_url if flow.request.method != "CONNECT" else flow.request.authority,
                    address)
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if flow.request.http_version.startswith("HTTP/1"):
            headers["Connection"] = "close"  # nothing more to say to this client (h2 forbids the header)
        flow.response = http.Response.make(403, access.refusal_body(address), headers)
        # Stops the chain: proxyauth, the router and the relay never see this request.
        raise exceptions.AddonHalt()

    # ---- credentials ahead of proxyauth ------------------------------------------------

    def _validator(self, pa) -> access.CachingValidator | None:
        """proxyauth's validator, wrapped in the cache the first time a request needs it.
        Wrapped here, not in configure(): proxyauth builds its validator after Gate's
        configure has run, and builds a new one (with an empty cache) whenever its option
        changes."""
        v = pa.validator
        if v is None or self.cache_ttl == 0 or isinstance(v, CHEAP):
            return None
        if not isinstance(v, access.CachingValidator):
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                                    thread_name_prefix="mirrorgate-proxyauth")
            v = pa.validator = access.CachingValidator(
                v, self.cache_ttl, serial=not isinstance(v, proxyauth.Htpasswd), executor=self._executor)
        return v

    async def _check_credentials(self, flow: http.HTTPFlow) -> None:
        pa = ctx.master.addons.get("proxyauth")
        if pa is None or flow.is_replay or flow.client_conn in pa.authenticated:
            return
        validator = self._validator(pa)
        if validator is None:
            return
        header = proxyauth.http_auth_header(proxyauth.is_http_proxy(flow))
        try:
            _, user, password = proxyauth.parse_http_basic_auth(flow.request.headers.get(header, ""))
        except ValueError:
            return  # nothing to check: proxyauth answers 407
        await validator.check(user, password)

    async def socks5_auth(self, data) -> None:
        # SOCKS5 credentials come once per connection; proxyauth decides right after.
        pa = ctx.master.addons.get("proxyauth")
        validator = self._validator(pa) if pa is not None else None
        if validator is not None:
            await validator.check(data.username, data.password)

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        self._admit(flow)
        await self._check_credentials(flow)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._admit(flow)
        await self._check_credentials(flow)
