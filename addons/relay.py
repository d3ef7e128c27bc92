"""Runs the relay (mirrorgate.relay) inside mitmproxy's event loop and keeps its upstream
TLS settings in step with mitmproxy's own."""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions

from addons.cache import Cache
from addons.rules import Rules
from mirrorgate.circuit import CircuitBoard
from mirrorgate.relay import RelayServer
from mirrorgate.upstream import UpstreamClient, make_ssl_context

log = logging.getLogger("mirrorgate.relay")


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
        if {"ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"} & updated:
            try:
                ssl_context = self._ssl_context()
            except (OSError, ValueError) as e:
                raise exceptions.OptionsError(f"cannot load upstream CA: {e}") from None
            if self.client is not None:
                self._retired.append(self.client)
                self.client = UpstreamClient(ssl_context)

    def _ssl_context(self):
        return make_ssl_context(ctx.options.ssl_verify_upstream_trusted_ca,
                                ctx.options.ssl_verify_upstream_trusted_confdir)

    def _current_client(self) -> UpstreamClient:
        if self.client is None:
            self.client = UpstreamClient(self._ssl_context())
        return self.client

    async def running(self) -> None:
        await self.server.start()
        log.info("Relay listening on %s", self.server.base_url)

    async def done(self) -> None:
        await self.server.stop()
        for c in [self.client, *self._retired]:
            if c is not None:
                await c.close()
