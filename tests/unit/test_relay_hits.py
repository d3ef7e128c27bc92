"""Hits the proxy answers itself (RelayServer.answer_hit) against the same hits served by
the relay over HTTP: the same status, headers and body, whichever way a hit goes."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import time

import aiohttp
import pytest

from mirrorgate import routing
from mirrorgate.cache.policy import Entry
from mirrorgate.cache.store import DiskStore
from mirrorgate.circuit import CircuitBoard
from mirrorgate.relay import HOT_ENTRY_MAX, SECRET_HEADER, TARGET_HEADER, RelayServer
from mirrorgate.rules import parse_rules
from mirrorgate.trace import Trace

RULES = parse_rules("""
version: 1
profiles: {p: ""}
default_profile: p
rules:
  - name: reg
    match: https://origin.example/
    mirrors:
      p: [https://mirror.example/]
    cache:
      artifacts: ["/files/**"]
      metadata: ["/meta/*"]
      ttl: 5m
      vary: [Accept]
""")
ORIGIN = "https://origin.example"
BODY = bytes(range(256)) * 4
MODIFIED = "Tue, 03 Nov 2026 10:00:00 GMT"
STORED = {
    # What aiohttp adds to its own responses is missing here, so that it shows.
    "/files/bare.bin": (BODY, (("ETag", '"b1"'),)),
    "/files/full.bin": (BODY, (("Server", "nginx"), ("Date", "Tue, 03 Nov 2026 10:00:00 GMT"),
                               ("Content-Type", "application/x-tar"), ("Last-Modified", MODIFIED),
                               ("ETag", '"f1"'), ("X-Mirrorgate", "from a mirror that is a Mirrorgate"),
                               ("X-Mirrorgate-Upstream-ETag", '"u1"'), ("Accept-Ranges", "bytes"))),
    "/files/empty.bin": (b"", (("ETag", '"e"'),)),
    "/files/packed.json": (gzip.compress(b'{"a": 1}' * 100, mtime=0), (("Content-Encoding", "gzip"),)),
    "/files/big.bin": (b"x" * (HOT_ENTRY_MAX + 1), (("ETag", '"big"'),)),
}
CASES = [
    ("GET", "/files/bare.bin", {}),
    ("HEAD", "/files/bare.bin", {}),
    ("GET", "/files/full.bin", {}),
    ("HEAD", "/files/full.bin", {}),
    ("GET", "/files/full.bin", {"Range": "bytes=10-19"}),
    ("GET", "/files/full.bin", {"Range": "bytes=-5"}),
    ("GET", "/files/full.bin", {"Range": "bytes=1000-2000"}),
    ("GET", "/files/full.bin", {"Range": f"bytes={len(BODY)}-"}),
    ("GET", "/files/full.bin", {"Range": "bytes=0-0,5-6"}),
    ("GET", "/files/full.bin", {"Range": "bytes=10-19", "If-Range": '"f1"'}),
    ("GET", "/files/full.bin", {"Range": "bytes=10-19", "If-Range": '"other"'}),
    ("HEAD", "/files/full.bin", {"Range": "bytes=10-19"}),
    ("GET", "/files/full.bin", {"If-None-Match": '"f1"'}),
    ("GET", "/files/full.bin", {"If-None-Match": 'W/"x", "f1"'}),
    ("GET", "/files/full.bin", {"If-None-Match": '"other"'}),
    ("GET", "/files/full.bin", {"If-Modified-Since": MODIFIED}),
    ("GET", "/files/full.bin", {"If-Modified-Since": "Mon, 02 Nov 2026 10:00:00 GMT"}),
    ("GET", "/files/empty.bin", {}),
    ("GET", "/files/packed.json", {"Accept-Encoding": "gzip, br"}),
    ("GET", "/files/packed.json", {}),
    ("GET", "/meta/left-pad", {"Accept": "application/json"}),
    ("GET", "/meta/left-pad", {"Accept": "application/vnd.npm.install-v1+json"}),
    ("GET", "/meta/gone", {}),
    ("HEAD", "/files/big.bin", {}),
    ("GET", "/files/big.bin", {"If-None-Match": '"big"'}),
    ("GET", "/files/big.bin", {"Range": "bytes=0-9"}),  # the one case the proxy leaves to the relay
]


def publish(store: DiskStore, key: str, url: str, cls: str, status: int, body: bytes, headers, at: float) -> None:
    writer = store.begin(len(body))
    writer.write(body)
    store.publish(writer, Entry(key, url, cls, status, tuple(headers), len(body), at, at, f"mirror:{ORIGIN}/"))
    writer.close()


@pytest.fixture
def relay(tmp_path):
    store = DiskStore(tmp_path / "cache", 1 << 30, 0)
    now = time.time()
    for path, (body, headers) in STORED.items():
        publish(store, ORIGIN + path, ORIGIN + path, "artifact", 200, body, headers, now)
    for accept, body in (("application/json", b'{"full": 1}'), ("application/vnd.npm.install-v1+json", b'{"x": 1}')):
        url = ORIGIN + "/meta/left-pad"
        publish(store, f"{url}\naccept: {accept}", url, "metadata", 200, body, (("Content-Type", accept),), now)
    url = ORIGIN + "/meta/gone"
    publish(store, f"{url}\naccept: ", url, "metadata", 404, b"not here\n", (("Content-Type", "text/plain"),), now)
    server = RelayServer(lambda: (RULES, "p"), lambda: None, CircuitBoard(), lambda: store)
    yield server
    store.close()


def lowered(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def answered(relay: RelayServer, method: str, path: str, headers: dict):
    route = routing.route(RULES, routing.RequestFacts(method, "https", "origin.example", 443, path, False))
    return relay.answer_hit(method, lowered(headers), route, path, Trace("reg"))


def comparable(status, reason, headers: list[tuple[str, str]], body: bytes):
    # A Date that was not stored is the time of sending: only its shape can agree.
    stored_date = dict(STORED["/files/full.bin"][1])["Date"]
    for k, v in headers:
        if k == "Date" and v != stored_date:
            assert abs(email.utils.parsedate_to_datetime(v).timestamp() - time.time()) < 60
    return status, reason, [(k, "<sent>" if k == "Date" and v != stored_date else v) for k, v in headers], body


async def from_relay(relay: RelayServer) -> list:
    await relay.start()
    out = []
    try:
        # Only the case's headers: aiohttp's own would select other representations.
        async with aiohttp.ClientSession(auto_decompress=False,
                                         skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent")) as session:
            for method, path, headers in CASES:
                sent = {**headers, SECRET_HEADER: relay.secret, TARGET_HEADER: ORIGIN + path}
                async with session.request(method, relay.base_url + path, headers=sent) as r:
                    got = [(k.decode(), v.decode()) for k, v in r.raw_headers]
                    out.append(comparable(r.status, r.reason, got, await r.read()))
    finally:
        await relay.stop()
    return out


def test_a_hit_answered_by_the_proxy_is_the_one_the_relay_serves(relay):
    served = asyncio.run(from_relay(relay))
    assert relay.stats.hits == len(CASES)
    for (method, path, headers), by_relay in zip(CASES[:-1], served, strict=False):
        answer = answered(relay, method, path, headers)
        assert answer is not None, (method, path, headers)
        assert comparable(answer.status, answer.reason, answer.headers, answer.body) == by_relay, (method, path, headers)
    method, path, headers = CASES[-1]
    assert answered(relay, method, path, headers) is None  # a body too large to hold
    assert relay.stats.hits == 2 * len(CASES) - 1


def test_what_the_proxy_leaves_to_the_relay(relay):
    # A client that cannot read the stored coding, a stale or missing entry, an
    # unclassified path, a method the relay refuses.
    assert answered(relay, "GET", "/files/packed.json", {"Accept-Encoding": "identity"}) is None
    assert answered(relay, "GET", "/files/missing.bin", {}) is None
    assert answered(relay, "GET", "/other/x", {}) is None
    assert answered(relay, "get", "/files/bare.bin", {}) is None
    store = relay._store()
    url = ORIGIN + "/meta/old"
    publish(store, f"{url}\naccept: ", url, "metadata", 200, b"old", (), time.time() - 3600)
    assert answered(relay, "GET", "/meta/old", {}) is None
    assert relay.stats.hits == 0


def test_a_hit_whose_body_vanished_is_left_to_the_relay_and_forgotten(relay):
    store = relay._store()
    entry = store.lookup(ORIGIN + "/files/bare.bin")
    (store.objects / entry.name[:2] / entry.name).unlink()
    assert answered(relay, "GET", "/files/bare.bin", {}) is None
    assert store.lookup(ORIGIN + "/files/bare.bin") is None
