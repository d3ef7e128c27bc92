"""Runs the relay (mirrorgate.relay) inside mitmproxy's event loop and keeps its upstream
TLS settings in step with mitmproxy's own."""

from __future__ import annotations

import logging

import aiohttp
from mitmproxy import ctx, exceptions
from mitmproxy.proxy import mode_specs

from addons.cache import Cache
from addons.rules import Rules
from mirrorgate.circuit import CircuitBoard
from mirrorgate.relay import RelayServer
from mirrorgate.upstream import UpstreamClient, make_ssl_context

log = logging.getLogger("mirrorgate.relay")


def parent_proxy(modes) -> str | None:
    """The parent proxy of `--mode upstream:URL`, which the relay's own fetches (mirrors
    and origins alike) go through as mitmproxy's do; None in any other mode."""
    for spec in modes:
        mode = mode_specs.ProxyMode.parse(spec)
        if isinstance(mode, mode_specs.UpstreamMode):
            if mode.scheme != "http":
                raise exceptions.OptionsError(
                    f"--mode {spec}: Mirrorgate's own fetches reach a parent proxy over plain http only")
            host, port = mode.address
            return f"http://{host}:{port}"
    return None


class Relay:
    def __init__(self, rules: Rules, cache: Cache) -> None:
        self.circuits = CircuitBoard()
        self.client: UpstreamClient | None = None
        self._retired: list[UpstreamClient] = []
        self.server = RelayServer(rules.active, self._current_client, self.circuits, cache.current)

    def configure(self, updated: set[str]) -> None:
        if "ssl_insecure" in updated and ctx.options.ssl_insecure:
            raise exceptions.OptionsError(
                "ssl_insecure cannot be enabled with Mirrorgate: upstream certificates are always verified. "
                "To trust a private CA, pass it with --set ssl_verify_upstream_trusted_ca=FILE")
        if {"ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir", "mode",
                "upstream_auth"} & updated:
            try:
                client = self._new_client()  # also validates the options before anything runs
            except (OSError, ValueError) as e:
                raise exceptions.OptionsError(f"cannot load upstream CA: {e}") from None
            if self.client is not None:
                self._retired.append(self.client)
            self.client = client

    def _new_client(self) -> UpstreamClient:
        ssl_context = make_ssl_context(ctx.options.ssl_verify_upstream_trusted_ca,
                                       ctx.options.ssl_verify_upstream_trusted_confdir)
        parent = parent_proxy(ctx.options.mode)
        auth = None
        if parent and ctx.options.upstream_auth:
            user, _, password = ctx.options.upstream_auth.partition(":")
            auth = aiohttp.BasicAuth(user, password)
        return UpstreamClient(ssl_context, parent, auth)

    def _current_client(self) -> UpstreamClient:
        if self.client is None:
            self.client = self._new_client()
        return self.client

    async def running(self) -> None:
        await self.server.start()
        log.info("Relay listening on %s", self.server.base_url)

    async def done(self) -> None:
        await self.server.stop()
        for c in [self.client, *self._retired]:
            if c is not None:
                await c.close()
