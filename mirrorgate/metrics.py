"""Prometheus metrics: what the proxy did, counted once per request (from the same record
as the access log) and once per upstream attempt (from the fallback walk), plus gauges
read when scraped (circuits, cache size).

Names follow Prometheus conventions: a `mirrorgate_` prefix, base units (seconds,
bytes), `_total` on counters. Label values come from the rules (rule names, upstream
URL prefixes), so their number is bounded by the rules file, never by clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mirrorgate.circuit import Circuit, State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# First-byte latencies from a nearby mirror (tens of ms) to a slow origin (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


FROM_CACHE = ("HIT", "STALE", "REVALIDATED")


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "error"


class _State(Collector):
    """Gauges read at scrape time from the objects that hold the state."""

    def __init__(self, circuits: Callable[[], Mapping[str, Circuit]], cache: Callable[[], Mapping[str, int]]) -> None:
        self._circuits, self._cache = circuits, cache

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily("mirrorgate_circuit_state", "1 for the state each mirror's circuit is in.",
                                  labels=["mirror", "state"])
        failures = GaugeMetricFamily("mirrorgate_circuit_consecutive_failures",
                                     "Consecutive failures counted against each mirror.", labels=["mirror"])
        latency = GaugeMetricFamily("mirrorgate_mirror_latency_seconds",
                                    "Smoothed first-byte latency of each mirror's recent successes.",
                                    labels=["mirror"])
        for url, circuit in sorted(self._circuits().items()):
            for s in State:
                state.add_metric([url, s.value], 1.0 if circuit.state is s else 0.0)
            failures.add_metric([url], circuit.failures)
            if circuit.latency_ewma is not None:
                latency.add_metric([url], circuit.latency_ewma)
        yield from (state, failures, latency)
        usage = self._cache()
        for key, name, text in (("bytes", "mirrorgate_cache_size_bytes", "Bytes of bodies in the cache."),
                                ("max_bytes", "mirrorgate_cache_max_bytes", "The cache's size bound."),
                                ("entries", "mirrorgate_cache_entries", "Entries in the cache.")):
            yield GaugeMetricFamily(name, text, value=usage.get(key, 0))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mirrorgate_requests", "Requests a rule owns, by who answered and how.",
                                ["rule", "upstream", "status_class"], registry=r)
        self.cache = Counter("mirrorgate_cache_requests", "Requests for cacheable paths, by cache result.",
                             ["rule", "result"], registry=r)
        self.served = Counter("mirrorgate_cache_served_bytes", "Body bytes answered from the cache.",
                              ["rule"], registry=r)
        self.fetched = Counter("mirrorgate_upstream_bytes", "Body bytes relayed from upstreams to clients.",
                               ["rule", "upstream"], registry=r)
        self.fallbacks = Counter("mirrorgate_fallbacks", "Upstreams passed over for a request, by cause.",
                                 ["rule", "upstream", "cause"], registry=r)
        self.latency = Histogram("mirrorgate_upstream_first_byte_seconds",
                                 "Time from sending a request upstream to its response headers.",
                                 ["rule", "upstream"], buckets=LATENCY_BUCKETS, registry=r)
        self.failures = Counter("mirrorgate_upstream_failures", "Upstream attempts that failed, by kind.",
                                ["rule", "upstream", "kind"], registry=r)

    def watch(self, circuits: Callable[[], Mapping[str, Circuit]], cache: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_State(circuits, cache))

    def request(self, record: Mapping) -> None:
        """Count one finished request from its access-log record (docs/access-log.md)."""
        rule, cache = record["rule"], record.get("cache")
        # A revalidated body names the upstream that said 304, but its bytes are the cache's.
        upstream = record.get("upstream") or ("cache" if cache in FROM_CACHE else "none")
        self.requests.labels(rule, upstream, status_class(record.get("status"))).inc()
        if cache:
            self.cache.labels(rule, cache.lower()).inc()
        size = record.get("bytes") or 0
        if cache in FROM_CACHE:
            self.served.labels(rule).inc(size)
        elif record.get("upstream"):
            self.fetched.labels(rule, upstream).inc(size)
        for step in record.get("fallbacks") or ():
            self.fallbacks.labels(rule, step["upstream"], step["cause"]).inc()

    def attempt(self, rule: str, upstream: str, seconds: float | None, failure: str | None) -> None:
        """One upstream attempt: its first-byte latency, or the kind of failure."""
        if failure is not None:
            self.failures.labels(rule, upstream, failure).inc()
        elif seconds is not None:
            self.latency.labels(rule, upstream).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
