"""The fallback walk's bookkeeping, with a stub upstream client (no sockets)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mirrorgate.circuit import CircuitBoard, State
from mirrorgate.rules import parse_rules
from mirrorgate.walk import Plan, walk

RULE = parse_rules("""
version: 1
profiles: {p: ""}
default_profile: p
rules:
  - name: r
    match: https://origin.example/
    mirrors:
      p: [https://a.example/, https://b.example/]
    circuit: {failures: 1, cooldown: 1ms}
""").rules[0]


class StubClient:
    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses = statuses
        self.asked: list[str] = []

    async def open(self, method, url, headers, timeouts, follow_redirects):
        self.asked.append(url)
        host = url.split("/")[2]
        return SimpleNamespace(status=self.statuses[host], release=lambda: None)


def test_a_mirror_the_walk_never_reaches_keeps_its_probe_free():
    board = CircuitBoard()
    b = board.get("https://b.example/", RULE.circuit)
    b.failed(0.0)  # open; its cool-down of 1 ms is long past
    client = StubClient({"a.example": 200})

    w = asyncio.run(walk(client, board, RULE, RULE.match[0], "/x", "p", "GET", {}))

    assert w.hop.url == "https://a.example/" and client.asked == ["https://a.example/x"]
    assert b.state is State.OPEN and not b.probing  # not reserved for a probe that never ran
    # The next request that reaches b probes it.
    client.statuses.update({"a.example": 503, "b.example": 200})
    w = asyncio.run(walk(client, board, RULE, RULE.match[0], "/x", "p", "GET", {}))
    assert w.hop.url == "https://b.example/" and b.state is State.CLOSED


class ChallengingClient(StubClient):
    """A mirror that wants a token of its own: 401 with a challenge until it gets it."""

    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[dict] = []

    async def open(self, method, url, headers, timeouts, follow_redirects):
        self.asked.append(url)
        self.sent.append(dict(headers))
        ok = headers.get("Authorization") == "Bearer mirror-token"
        return SimpleNamespace(status=200 if ok else 401, release=lambda: None,
                               headers={"WWW-Authenticate": 'Bearer realm="https://auth.a.example/token"'})


def test_the_origin_goes_first_for_a_mutable_pointer():
    client = StubClient({"origin.example": 200, "a.example": 200})
    w = asyncio.run(walk(client, CircuitBoard(), RULE, RULE.match[0], "/tag", "p", "GET", {}, plan=Plan(origin_first=True)))
    assert w.hop.kind == "origin" and client.asked == ["https://origin.example/tag"]
    client.statuses["origin.example"] = 503  # the origin is down: mirrors stand in
    w = asyncio.run(walk(client, CircuitBoard(), RULE, RULE.match[0], "/tag", "p", "GET", {}, plan=Plan(origin_first=True)))
    assert w.hop.url == "https://a.example/"


def test_a_mirror_challenge_is_answered_with_the_proxys_token_never_the_clients():
    client = ChallengingClient()
    asked: list[tuple] = []

    async def authorize(mirror, path, challenge):
        asked.append((mirror, path, challenge))
        return {"Authorization": "Bearer mirror-token"} if challenge else None

    w = asyncio.run(walk(client, CircuitBoard(), RULE, RULE.match[0], "/lib/x/blobs/d", "p", "GET",
                         {"Authorization": "Bearer client-token"}, plan=Plan(authorize=authorize)))

    assert w.hop.url == "https://a.example/" and w.opened.status == 200
    assert asked == [("https://a.example/", "/lib/x/blobs/d", None),
                     ("https://a.example/", "/lib/x/blobs/d", 'Bearer realm="https://auth.a.example/token"')]
    assert [s.get("Authorization") for s in client.sent] == [None, "Bearer mirror-token"]
