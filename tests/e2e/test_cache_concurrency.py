"""Single-flight and crash safety: the properties a shared gateway cache lives by."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import client_context
from tests.e2e.test_cache import cached_rules
from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT, closed_port
from tests.support.proxy import start_proxy

pytestmark = pytest.mark.e2e

CLIENTS = 50
FIRST, REST = b"A" * 300_000, b"B" * 300_000


def test_concurrent_misses_share_one_upstream_fetch_as_it_arrives(fake, proxy, pki):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    gate = mirror.gate()
    mirror.two_halves("/files/big.whl", FIRST, REST, gate)
    p = proxy(cached_rules(origin, [mirror]))
    got_first = threading.Semaphore(0)
    ctx = client_context(p.ca, pki.ca)

    def download(i: int) -> tuple[bytes, str]:
        with httpx.Client(proxy=p.url, verify=ctx, trust_env=False, timeout=WAIT) as c:
            with c.stream("GET", origin.url + "files/big.whl") as r:
                chunks = r.iter_raw()
                body = next(chunks)
                got_first.release()
                if i == 0:
                    return b"", "left early"  # the first client hangs up mid-download
                return body + b"".join(chunks), header(r)["cache"]

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(download, i) for i in range(CLIENTS)]
        for _ in range(CLIENTS):
            # Every client receives bytes while the upstream still holds back the rest:
            # they are served from the download in progress, not after it.
            assert got_first.acquire(timeout=WAIT), "a client got nothing before the upstream finished"
        assert gate.reached.is_set()
        gate.open()
        results = [f.result(timeout=WAIT) for f in futures]

    assert mirror.count("/files/big.whl") == 1
    assert all(body == FIRST + REST for body, _ in results[1:])
    assert {state for _, state in results[1:]} == {"MISS"}
    # The client that left did not end the fill: the entry was published.
    with httpx.Client(proxy=p.url, verify=ctx, trust_env=False, timeout=WAIT) as c:
        r = c.get(origin.url + "files/big.whl")
    assert r.content == FIRST + REST and header(r)["cache"] == "HIT"
    assert mirror.count("/files/big.whl") == 1


def test_kill_9_mid_write_leaves_nothing_servable(fake, pki, tmp_path, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    gate = mirror.gate()
    mirror.two_halves("/files/big.whl", FIRST, REST, gate)
    cache_dir = tmp_path / "cache"
    rules = tmp_path / "rules.yaml"
    rules.write_text(cached_rules(origin, [mirror]))
    p = start_proxy(rules, tmp_path / "conf", pki.ca, cache_dir=cache_dir)
    try:
        with client(p).stream("GET", origin.url + "files/big.whl") as r:
            assert next(r.iter_raw())  # the fill is writing
            assert [f for f in os.listdir(cache_dir / "tmp") if f.startswith("fill-")]
            os.kill(p.proc.pid, signal.SIGKILL)
            p.proc.wait(WAIT)
    except httpx.HTTPError:
        pass  # the client's connection died with the proxy, as it should
    finally:
        p.stop()

    # Restart on the same cache with every upstream gone: a partial file served now would
    # be a corrupt artifact.
    dead = f"https://127.0.0.4:{closed_port('127.0.0.4')}/"
    rules.write_text(cached_rules(origin, [mirror]).replace(mirror.url, dead))
    origin.stop()
    p2 = start_proxy(rules, tmp_path / "conf", pki.ca, cache_dir=cache_dir)
    try:
        r = client(p2).get(origin.url + "files/big.whl")
        assert r.status_code == 502 and header(r)["cache"] == "MISS"
        assert os.listdir(cache_dir / "tmp") == []  # start-up removed the orphan
        assert "Cache recovery: removed 1 orphaned files" in p2.text()
    finally:
        p2.stop()


def test_the_index_survives_a_restart(fake, pki, tmp_path, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/files/a.whl", b"wheel", headers={"ETag": '"w"'})
    cache_dir, rules = tmp_path / "cache", tmp_path / "rules.yaml"
    rules.write_text(cached_rules(origin, [mirror]))
    p = start_proxy(rules, tmp_path / "conf", pki.ca, cache_dir=cache_dir)
    try:
        assert header(client(p).get(origin.url + "files/a.whl"))["cache"] == "MISS"
    finally:
        p.stop()
    mirror.stop()
    origin.stop()

    p2 = start_proxy(rules, tmp_path / "conf", pki.ca, cache_dir=cache_dir)
    try:
        r = client(p2).get(origin.url + "files/a.whl")
        assert r.content == b"wheel" and r.headers["etag"] == '"w"' and header(r)["cache"] == "HIT"
        assert "1 entries" in p2.text()
    finally:
        p2.stop()
