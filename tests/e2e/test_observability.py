"""What operators see: /metrics as Prometheus parses it, and the status page as headless
Chromium renders it, both after real traffic through the proxy."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_fallback import header, rules_yaml
from tests.support.fakes import WAIT, closed_port
from tests.support.proxy import clean_env

pytestmark = pytest.mark.e2e

CACHE = "    cache: {artifacts: ['/*.tgz'], metadata: ['/meta'], ttl: 5m}\n"


def traffic(fake, proxy, client):
    """A mirror that serves, a mirror that fails with 503 then has its circuit open, a
    dead mirror, hits and misses."""
    origin, good, flaky = fake("origin", "127.0.0.2"), fake("good", "127.0.0.3"), fake("flaky", "127.0.0.4")
    dead = f"https://127.0.0.5:{closed_port('127.0.0.5')}/"
    for f in (origin, good):
        f.serve("/a.tgz", b"A" * 1000)
    origin.serve("/b.tgz", b"B" * 500)
    flaky.serve("/a.tgz", b"", status=503)
    flaky.serve("/b.tgz", b"", status=503)
    p = proxy(rules_yaml(origin.url, [dead, flaky.url, good.url], cache=CACHE,
                         circuit="    circuit: {failures: 1, cooldown: 1h}\n",
                         fallback_on="    fallback_on: [connect_error, 5xx, 404]\n"))
    c = client(p)
    assert c.get(origin.url + "a.tgz").content == b"A" * 1000  # dead, flaky 503, good serves
    assert header(c.get(origin.url + "a.tgz"))["cache"] == "HIT"
    r = c.get(origin.url + "b.tgz")  # both open circuits skipped; good 404s; the origin serves
    assert r.content == b"B" * 500 and header(r)["upstream"] == f"origin:{origin.url}"
    return p, c, origin, good, flaky, dead


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got, name: str, **labels) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


def test_metrics_are_prometheus_text_with_the_counts_of_what_happened(fake, proxy, client):
    p, c, origin, good, flaky, dead = traffic(fake, proxy, client)

    r = c.get("http://mirrorgate/metrics")

    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(r.text)
    mirror, o = f"mirror:{good.url}", f"origin:{origin.url}"
    assert value(got, "mirrorgate_requests_total", rule="reg", upstream=mirror, status_class="2xx") == 1
    assert value(got, "mirrorgate_requests_total", rule="reg", upstream="cache", status_class="2xx") == 1
    assert value(got, "mirrorgate_requests_total", rule="reg", upstream=o, status_class="2xx") == 1
    assert value(got, "mirrorgate_cache_requests_total", rule="reg", result="hit") == 1
    assert value(got, "mirrorgate_cache_requests_total", rule="reg", result="miss") == 2
    assert value(got, "mirrorgate_cache_served_bytes_total", rule="reg") == 1000
    assert value(got, "mirrorgate_upstream_bytes_total", rule="reg", upstream=mirror) == 1000
    assert value(got, "mirrorgate_upstream_bytes_total", rule="reg", upstream=o) == 500
    assert value(got, "mirrorgate_fallbacks_total", rule="reg", upstream=f"mirror:{dead}", cause="connect_error") == 1
    assert value(got, "mirrorgate_fallbacks_total", rule="reg", upstream=f"mirror:{flaky.url}", cause="503") == 1
    assert value(got, "mirrorgate_fallbacks_total", rule="reg", upstream=mirror, cause="404") == 1
    assert value(got, "mirrorgate_upstream_failures_total", rule="reg", upstream=f"mirror:{dead}",
                 kind="connect_error") == 1
    # Attempts that got headers: good twice (200, 404), flaky once, the origin once.
    assert value(got, "mirrorgate_upstream_first_byte_seconds_count", rule="reg", upstream=mirror) == 2
    assert value(got, "mirrorgate_upstream_first_byte_seconds_count", rule="reg", upstream=o) == 1
    for url, state in ((dead, "open"), (flaky.url, "open"), (good.url, "closed")):
        assert value(got, "mirrorgate_circuit_state", mirror=url, state=state) == 1
    assert value(got, "mirrorgate_cache_entries") == 2 and value(got, "mirrorgate_cache_size_bytes") == 1500


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (.ci/run installs it)")
def test_status_page_in_headless_chromium(fake, proxy, client, tmp_path):
    p, c, origin, good, flaky, dead = traffic(fake, proxy, client)
    shot = tmp_path / "status.png"
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}", f"--proxy-server={p.url}", "--window-size=1200,900"]

    dom = subprocess.run([*chromium, "--dump-dom", "http://mirrorgate/status"], capture_output=True, text=True,
                         env=clean_env(), timeout=WAIT * 2)
    subprocess.run([*chromium, f"--screenshot={shot}", "http://mirrorgate/status"], capture_output=True,
                   env=clean_env(), timeout=WAIT * 2)

    page = dom.stdout
    assert "<h1>Mirrorgate status</h1>" in page, dom.stderr[-2000:]
    assert "profile <b>test</b>" in page
    rules_table = page[page.index('id="rules"'):]
    for url in (dead, flaky.url, good.url):
        assert url in rules_table
    row = lambda url: rules_table[rules_table.index(url):].split("</tr>")[0]  # noqa: E731
    assert "skipped (1 failure;" in row(dead) and "skipped (1 failure;" in row(flaky.url)
    assert 'class="ok">healthy' in row(good.url) and " ms</td>" in row(good.url)
    cache_table = page[page.index('id="cache"'):page.index('id="rules"')]
    assert "33.3%" in cache_table  # one hit in three lookups
    assert "1000 B" in cache_table  # saved: the hit's body
    assert shot.stat().st_size > 10_000  # a real rendering, not an error page
