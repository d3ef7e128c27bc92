"""Bodies stream: a large artifact passes through without the proxy holding it.

The 1 GiB figure lives in bench/ (docs/benchmarks.md); this test uses 256 MiB, which a
buffering proxy could not pass without growing by several times that.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.e2e.test_fallback import header, rules_yaml
from tests.support.fakes import pattern_bytes

pytestmark = pytest.mark.e2e

SIZE = 256 * 1024 * 1024
ALLOWED_GROWTH_KIB = 64 * 1024


def test_a_large_artifact_streams_with_flat_memory(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.pattern("/big.bin", SIZE)
    mirror.serve("/small", b"warm-up")
    p = proxy(rules_yaml(origin.url, [mirror.url]))
    c = client(p)
    c.get(origin.url + "small")  # TLS, relay and pools are set up before measuring
    before = p.peak_rss_kib()

    digest, received = hashlib.sha256(), 0
    with c.stream("GET", origin.url + "big.bin") as r:
        assert header(r)["upstream"] == f"mirror:{mirror.url}"
        for chunk in r.iter_raw():
            digest.update(chunk)
            received += len(chunk)

    assert received == SIZE
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(SIZE)).hexdigest()
    growth = p.peak_rss_kib() - before
    print(f"peak RSS before {before // 1024} MiB, growth {growth // 1024} MiB")
    assert growth < ALLOWED_GROWTH_KIB, f"peak RSS grew by {growth // 1024} MiB"
