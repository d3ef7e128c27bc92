"""The fallback walk's bookkeeping, with a stub upstream client (no sockets)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mirrorgate.circuit import CircuitBoard, State
from mirrorgate.rules import parse_rules
from mirrorgate.walk import walk

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
