"""A mirror that keeps failing is skipped, so a dead mirror stops costing time; after the
cool-down one probe decides whether it is back."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_fallback import header, rules_yaml

pytestmark = pytest.mark.e2e


def test_circuit_opens_and_the_next_request_skips_the_stalled_mirror(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/f", b"origin")
    mirror.stall("/f", mirror.gate())
    p = proxy(rules_yaml(origin.url, [mirror.url], timeouts="    timeouts: {first_byte: 300ms}\n",
                         circuit="    circuit: {failures: 2, cooldown: 1h}\n"))
    c = client(p)

    for _ in range(2):
        r = c.get(origin.url + "f")
        assert r.content == b"origin" and header(r)["fallback"] == f"mirror:{mirror.url} timeout"
    r = c.get(origin.url + "f")

    assert r.content == b"origin"
    assert header(r)["skipped"] == f"mirror:{mirror.url} circuit-open"
    assert "fallback" not in header(r)  # no timeout was waited for
    assert mirror.count("/f") == 2


def test_circuit_closes_again_after_a_successful_probe(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/f", b"origin")
    mirror.serve("/f", b"down", status=503)
    p = proxy(rules_yaml(origin.url, [mirror.url], circuit="    circuit: {failures: 1, cooldown: 300ms}\n"))
    c = client(p)

    assert header(c.get(origin.url + "f"))["fallback"] == f"mirror:{mirror.url} 503"
    mirror.serve("/f", b"back")  # the mirror recovers
    skipped_meanwhile = 0
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, "the circuit never let a probe through"
        r = c.get(origin.url + "f")
        if "skipped" not in header(r):
            break
        skipped_meanwhile += 1
        assert r.content == b"origin"

    assert r.content == b"back" and header(r)["upstream"] == f"mirror:{mirror.url}"
    assert mirror.count("/f") == 2  # the failure, then exactly one probe
    r = c.get(origin.url + "f")  # closed again: no skipping
    assert r.content == b"back" and "skipped" not in header(r)
