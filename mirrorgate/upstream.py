"""The network edge towards mirrors and origins: one pooled aiohttp client shared by all
clients of the proxy, with real connect, first-byte and idle timeouts.

Failures are reported as `UpstreamFailure` with one of the kinds that rules name in
`fallback_on`; deciding what to do about them is `routing`'s job.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
import certifi
from yarl import URL

from mirrorgate.rules import Timeouts

CHUNK = 256 * 1024

# Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
# proxy's own. They are never copied from one hop to the next.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host",
})


class UpstreamFailure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def make_ssl_context(cafile: str | None = None, capath: str | None = None) -> ssl.SSLContext:
    """Strict verification against certifi, as mitmproxy does, or against the bundle the
    operator gave mitmproxy (`ssl_verify_upstream_trusted_ca`/`_confdir`)."""
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


async def _headers_sent(session, trace_ctx: SimpleNamespace, params) -> None:  # noqa: ARG001
    # The first-byte clock starts once the request is on the wire, so that connect
    # time is governed by the connect timeout alone.
    trace_ctx.trace_request_ctx.on_sent()


@dataclass
class Opened:
    """Response headers are in; the body is still on the wire."""

    status: int
    reason: str
    headers: Mapping[str, str] | aiohttp.typedefs.CIMultiDictProxy
    response: aiohttp.ClientResponse
    idle: float

    async def body(self) -> AsyncIterator[bytes]:
        """The raw body (content-encoding untouched), failing with `UpstreamFailure`
        when the upstream stalls for longer than the idle timeout or breaks off."""
        stream = self.response.content
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle):
                        chunk = await stream.readany()
                except TimeoutError:
                    raise UpstreamFailure("timeout", f"no data for {self.idle:g}s mid-body") from None
                if not chunk:
                    return
                yield chunk
        except aiohttp.ClientError as e:
            raise UpstreamFailure("protocol_error", f"body broken off: {e!r}") from None

    def release(self) -> None:
        self.response.close()


class UpstreamClient:
    """`parent`: a corporate parent proxy (http://host:port) every fetch goes through,
    with `parent_auth` as its Basic credentials."""

    def __init__(self, ssl_context: ssl.SSLContext, parent: str | None = None,
                 parent_auth: aiohttp.BasicAuth | None = None) -> None:
        self._parent, self._parent_auth = parent, parent_auth
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_headers_sent)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=512, ttl_dns_cache=60),
            # Bodies pass through byte for byte: artifacts are hashed by their clients.
            auto_decompress=False,
            # The upstream sees the client's own headers, not aiohttp's defaults.
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
            trace_configs=[trace],
            # Our own upstream fetches must not loop back through HTTPS_PROXY.
            trust_env=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def open(self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts,
                   follow_redirects: bool) -> Opened:
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout(timeouts.connect + timeouts.first_byte)
        ctx = SimpleNamespace(on_sent=lambda: deadline.reschedule(loop.time() + timeouts.first_byte))
        try:
            async with deadline:
                resp = await self._session.request(
                    method,
                    URL(url, encoded=True),
                    headers=headers,
                    allow_redirects=follow_redirects,
                    max_redirects=5,
                    proxy=self._parent,
                    proxy_auth=self._parent_auth,
                    timeout=aiohttp.ClientTimeout(total=None, connect=timeouts.connect,
                                                  sock_connect=timeouts.connect),
                    trace_request_ctx=ctx,
                )
        except TimeoutError:
            raise UpstreamFailure("timeout", "no response headers in time") from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as e:
            raise UpstreamFailure("tls_error", str(e)) from None
        except aiohttp.ClientConnectorError as e:
            raise UpstreamFailure("connect_error", str(e)) from None
        except (aiohttp.ClientError, ValueError) as e:
            raise UpstreamFailure("protocol_error", repr(e)) from None
        return Opened(resp.status, resp.reason or "", resp.headers, resp, timeouts.idle)
