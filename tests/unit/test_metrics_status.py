"""Metrics counting and the status page, pure: records in, numbers and HTML out."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mirrorgate.circuit import Circuit, State
from mirrorgate.metrics import Metrics
from mirrorgate.rules import CircuitPolicy, parse_rules
from mirrorgate.status import render


def sample(m: Metrics, name: str, **labels) -> float:
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def record(**fields) -> dict:
    return {"rule": "npm", "upstream": None, "status": 200, "cache": None, "bytes": 0, "fallbacks": [], **fields}


def test_requests_bytes_and_fallbacks_are_counted_by_source():
    m = Metrics()
    m.request(record(cache="HIT", bytes=10))
    m.request(record(cache="REVALIDATED", upstream="mirror:https://m/", bytes=7))  # 304 upstream, body ours
    m.request(record(cache="MISS", upstream="origin:https://o/", bytes=5, status=200,
                     fallbacks=[{"upstream": "mirror:https://m/", "cause": "timeout"}]))
    m.request(record(upstream=None, status=502))

    assert sample(m, "mirrorgate_requests_total", rule="npm", upstream="cache", status_class="2xx") == 1
    assert sample(m, "mirrorgate_requests_total", rule="npm", upstream="mirror:https://m/", status_class="2xx") == 1
    assert sample(m, "mirrorgate_requests_total", rule="npm", upstream="none", status_class="5xx") == 1
    assert sample(m, "mirrorgate_cache_served_bytes_total", rule="npm") == 17
    assert sample(m, "mirrorgate_upstream_bytes_total", rule="npm", upstream="origin:https://o/") == 5
    assert sample(m, "mirrorgate_cache_requests_total", rule="npm", result="revalidated") == 1
    assert sample(m, "mirrorgate_fallbacks_total", rule="npm", upstream="mirror:https://m/", cause="timeout") == 1


def test_attempts_feed_latency_or_failures_and_gauges_are_read_when_scraped():
    m = Metrics()
    circuit = Circuit(CircuitPolicy(failures=1, cooldown=30.0))
    m.watch(lambda: {"https://m/": circuit}, lambda: {"bytes": 3, "entries": 1, "max_bytes": 9})
    m.attempt("npm", "mirror:https://m/", 0.2, None)
    m.attempt("npm", "mirror:https://m/", None, "timeout")
    circuit.failed(0.0)

    assert sample(m, "mirrorgate_upstream_first_byte_seconds_count", rule="npm", upstream="mirror:https://m/") == 1
    assert sample(m, "mirrorgate_upstream_first_byte_seconds_bucket", rule="npm", upstream="mirror:https://m/",
                  le="0.25") == 1
    assert sample(m, "mirrorgate_upstream_failures_total", rule="npm", upstream="mirror:https://m/",
                  kind="timeout") == 1
    assert sample(m, "mirrorgate_circuit_state", mirror="https://m/", state="open") == 1
    assert sample(m, "mirrorgate_circuit_state", mirror="https://m/", state="closed") == 0
    assert sample(m, "mirrorgate_cache_size_bytes") == 3 and sample(m, "mirrorgate_cache_max_bytes") == 9


RULES = parse_rules("""
version: 1
profiles: {cn: "", direct: ""}
default_profile: cn
rules:
  - name: npm
    match: https://registry.npmjs.org/
    mirrors: {cn: ["https://a.example/", "https://b.example/<x>/"]}
  - name: plain
    match: https://plain.example/
""", "rules/x.yaml")


def test_status_page_shows_each_mirror_with_its_health_and_escapes_what_it_shows():
    opened = Circuit(CircuitPolicy(failures=1, cooldown=30.0), state=State.OPEN, failures=2, opened_at=100.0)
    healthy = Circuit(CircuitPolicy(failures=1, cooldown=30.0), latency_ewma=0.0421)
    page = render(RULES, "cn", {"https://a.example/": healthy, "https://b.example/<x>/": opened},
                  {"enabled": True, "bytes": 2048, "max_bytes": 4096, "entries": 2, "hit_ratio": 0.5,
                   "bytes_from_cache": 3 * 1024 * 1024}, now=110.0)

    assert "https://b.example/&lt;x&gt;/" in page and "<x>" not in page
    assert "skipped (2 failures; probed again in 20s)" in page
    assert 'class="ok">healthy</td><td class="num">42 ms' in page
    assert "origin only" in page  # the rule without mirrors
    assert "50.0%" in page and "3.0 MiB" in page and "2.0 KiB of 4.0 KiB (2 entries)" in page
    assert "no lookups yet" in render(RULES, "direct", {}, {})
