"""The cache, end to end: real proxy, real TLS, fakes that count what reaches them."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from mirrorgate.relay import HOT_ENTRY_MAX
from mirrorgate.trace import parse_header
from tests.e2e.test_fallback import header, rules_yaml
from tests.e2e.test_policy import read_log_lines
from tests.support.proxy import clean_env

pytestmark = pytest.mark.e2e

CACHE = """\
    cache:
      artifacts: ["/**/-/*.tgz", "/files/**"]
      metadata: ["/*", "/@*/*"]
      ttl: {ttl}
      vary: [Accept]
"""


def cached_rules(origin, mirrors, ttl="5m", **kw) -> str:
    return rules_yaml(origin.url, [m.url for m in mirrors], cache=CACHE.format(ttl=ttl), **kw)


def test_an_artifact_is_fetched_once_and_then_served_from_the_cache(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/left-pad/-/left-pad-1.3.0.tgz", b"tarball bytes",
                 headers={"ETag": '"t1"', "Content-Type": "application/octet-stream"})
    c = client(proxy(cached_rules(origin, [mirror])))

    first = c.get(origin.url + "left-pad/-/left-pad-1.3.0.tgz")
    second = c.get(origin.url + "left-pad/-/left-pad-1.3.0.tgz")

    assert first.content == second.content == b"tarball bytes"
    assert header(first)["cache"] == "MISS" and header(first)["upstream"] == f"mirror:{mirror.url}"
    assert header(second) == {"rule": "reg", "upstream": "cache", "cache": "HIT"}
    assert second.headers["etag"] == '"t1"' and second.headers["content-type"] == "application/octet-stream"
    assert second.headers["content-length"] == str(len(b"tarball bytes"))
    assert mirror.count() == 1 and origin.count() == 0


def test_a_hit_is_a_hit_whichever_mirror_filled_it(fake, proxy, client):
    origin, m1, m2 = fake("origin", "127.0.0.2"), fake("m1", "127.0.0.3"), fake("m2", "127.0.0.4")
    m1.serve("/files/a.whl", b"wheel", status=503)
    m2.serve("/files/a.whl", b"wheel")
    c = client(proxy(cached_rules(origin, [m1, m2])))

    assert header(c.get(origin.url + "files/a.whl"))["upstream"] == f"mirror:{m2.url}"
    m2.serve("/files/a.whl", b"gone", status=503)
    r = c.get(origin.url + "files/a.whl")

    assert r.content == b"wheel" and header(r)["cache"] == "HIT"


def test_unclassified_paths_are_not_cached(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/-/v1/search", b"results")
    c = client(proxy(cached_rules(origin, [mirror])))

    for _ in range(2):
        r = c.get(origin.url + "-/v1/search")
        assert r.content == b"results" and "cache" not in header(r)
    assert mirror.count() == 2


def test_stale_metadata_is_revalidated_and_the_etag_kept(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.with_etag("/left-pad", b'{"name":"left-pad"}', '"v1"', headers={"Content-Type": "application/json"})
    c = client(proxy(cached_rules(origin, [mirror], ttl="1ms")))

    first = c.get(origin.url + "left-pad")
    second = c.get(origin.url + "left-pad")  # 1 ms later the entry is stale

    assert header(first)["cache"] == "MISS"
    assert header(second)["cache"] == "REVALIDATED" and header(second)["upstream"] == f"mirror:{mirror.url}"
    assert second.content == b'{"name":"left-pad"}' and second.headers["etag"] == '"v1"'
    assert mirror.hits[1].headers["If-None-Match"] == '"v1"'
    # A client that already holds the ETag gets a 304 from the cache.
    third = c.get(origin.url + "left-pad", headers={"If-None-Match": '"v1"'})
    assert third.status_code == 304 and third.content == b""


def test_fresh_metadata_is_served_without_asking_upstream(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.with_etag("/left-pad", b"packument", '"v1"')
    c = client(proxy(cached_rules(origin, [mirror], ttl="1h")))

    c.get(origin.url + "left-pad")
    r = c.get(origin.url + "left-pad")

    assert header(r)["cache"] == "HIT" and mirror.count() == 1


def test_representations_selected_by_accept_are_kept_apart(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    corgi, full = "application/vnd.npm.install-v1+json", "application/json"
    mirror.by_accept("/left-pad", {corgi: b"abbreviated", full: b"full document"})
    c = client(proxy(cached_rules(origin, [mirror])))

    for _ in range(2):
        assert c.get(origin.url + "left-pad", headers={"Accept": corgi}).content == b"abbreviated"
        assert c.get(origin.url + "left-pad", headers={"Accept": full}).content == b"full document"
    assert mirror.count() == 2


def test_an_origin_confirmed_404_is_remembered_briefly_a_mirrors_is_not(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    c = client(proxy(cached_rules(origin, [mirror], fallback_on="    fallback_on: [5xx, 404, connect_error]\n")))

    for _ in range(2):
        assert c.get(origin.url + "files/nope.whl").status_code == 404
    assert (mirror.count(), origin.count()) == (1, 1)  # the second answer came from the cache

    strict = client(proxy(cached_rules(origin, [mirror], fallback_on="    fallback_on: [5xx, connect_error]\n")))
    for _ in range(2):
        assert strict.get(origin.url + "files/lagging.whl").status_code == 404
    assert mirror.count("/files/lagging.whl") == 2  # a mirror's 404 proves nothing


def test_authenticated_requests_are_never_cached(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/files/private.whl", b"private")
    mirror.serve("/files/private.whl", b"public")
    c = client(proxy(cached_rules(origin, [mirror])))

    for _ in range(2):
        r = c.get(origin.url + "files/private.whl", headers={"Authorization": "Bearer t"})
        assert r.content == b"private" and "cache" not in header(r)
    r = c.get(origin.url + "files/private.whl")
    assert r.content == b"public" and header(r)["cache"] == "MISS"
    assert origin.count() == 2


def test_range_and_head_are_served_from_the_cached_file(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    body = bytes(range(256)) * 4
    mirror.serve("/files/a.bin", body, headers={"ETag": '"e"'})
    c = client(proxy(cached_rules(origin, [mirror])))
    c.get(origin.url + "files/a.bin")

    r = c.get(origin.url + "files/a.bin", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == body[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(body)}" and header(r)["cache"] == "HIT"
    r = c.get(origin.url + "files/a.bin", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == body[-5:]
    r = c.get(origin.url + "files/a.bin", headers={"Range": f"bytes={len(body)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(body)}"
    r = c.head(origin.url + "files/a.bin")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(body))
    assert header(r)["cache"] == "HIT"
    assert mirror.count() == 1


def curl_h2(p, bundle, url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/2 request through the proxy: status, headers, body."""
    body = bundle.with_name("body")
    body.write_bytes(b"")  # curl leaves the file alone when there is no body
    out = subprocess.run(["curl", "-sS", "--http2", "--proxy", p.url, "--cacert", str(bundle), "-D", "-",
                          "-o", str(body), *args, url], capture_output=True, timeout=30, env=clean_env(), check=False)
    assert out.returncode == 0, out.stderr
    _tunnel, head = out.stdout.decode().strip().split("\r\n\r\n")
    status, *fields = head.split("\r\n")
    assert status.startswith("HTTP/2 ")
    return int(status.split()[1]), dict(f.split(": ", 1) for f in fields), body.read_bytes()


@pytest.mark.parametrize("size", [1000, HOT_ENTRY_MAX + 1], ids=["small", "large"])
def test_hits_answer_http2_clients_in_full(fake, proxy, client, pki, tmp_path, size):
    # Small bodies are answered by the proxy itself, large ones by the relay: the same either way.
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    mirror.serve("/files/a.bin", body, headers={"ETag": '"e"'})
    log = tmp_path / "access.log"
    p = proxy(cached_rules(origin, [mirror]), "--set", f"access_log={log}")
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    url = origin.url + "files/a.bin"
    client(p).get(url)

    status, headers, got = curl_h2(p, bundle, url)
    assert status == 200 and got == body and headers["etag"] == '"e"' and headers["content-length"] == str(size)
    assert parse_header(headers["x-mirrorgate"]) == {"rule": "reg", "upstream": "cache", "cache": "HIT"}
    status, headers, got = curl_h2(p, bundle, url, "-r", "10-19")
    assert status == 206 and got == body[10:20] and headers["content-range"] == f"bytes 10-19/{size}"
    status, headers, got = curl_h2(p, bundle, url, "-I")
    assert status == 200 and headers["content-length"] == str(size)
    status, headers, got = curl_h2(p, bundle, url, "-H", 'If-None-Match: "e"')
    assert status == 304 and got == b"" and parse_header(headers["x-mirrorgate"])["cache"] == "HIT"
    assert mirror.count() == 1

    lines = read_log_lines(log, 5)
    assert [(line["url"], line["status"], line["cache"], line["bytes"]) for line in lines[1:]] == [
        (url, 200, "HIT", size), (url, 206, "HIT", 10), (url, 200, "HIT", 0), (url, 304, "HIT", 0)]
    stats = client(p).get("http://mirrorgate/cache").json()["cache"]
    assert (stats["hits"], stats["misses"], stats["bytes_from_cache"]) == (4, 1, size + 10)


def test_a_hit_sees_the_request_as_mitmproxys_request_options_left_it(fake, proxy, client):
    # anticache drops the conditional headers before Mirrorgate answers, as before any upstream.
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/files/a.bin", b"body", headers={"ETag": '"e"'})
    c = client(proxy(cached_rules(origin, [mirror]), "--set", "anticache=true"))
    c.get(origin.url + "files/a.bin")

    r = c.get(origin.url + "files/a.bin", headers={"If-None-Match": '"e"'})
    assert r.status_code == 200 and r.content == b"body" and header(r)["cache"] == "HIT"


def test_a_request_whose_body_is_streamed_still_reaches_the_relay(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/files/a.bin", b"from the mirror")
    c = client(proxy(cached_rules(origin, [mirror]), "--set", "stream_large_bodies=1k"))

    r = c.request("GET", origin.url + "files/a.bin", content=b"x" * 4096)
    assert r.content == b"from the mirror" and header(r)["upstream"] == f"mirror:{mirror.url}"
    assert origin.count() == 0


def test_compressed_entries_reach_only_clients_that_accept_the_coding(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    doc = b'{"name": "left-pad"}' * 50
    mirror.serve("/left-pad", gzip.compress(doc, mtime=0), headers={"Content-Encoding": "gzip"})
    c = client(proxy(cached_rules(origin, [mirror])))

    with c.stream("GET", origin.url + "left-pad", headers={"Accept-Encoding": "gzip"}) as r:
        assert b"".join(r.iter_raw()) == gzip.compress(doc, mtime=0)
    with c.stream("GET", origin.url + "left-pad", headers={"Accept-Encoding": "gzip"}) as r:
        assert header(r)["cache"] == "HIT" and b"".join(r.iter_raw()) == gzip.compress(doc, mtime=0)
    # A client that cannot decode gzip is never handed the stored gzip bytes.
    mirror.serve("/left-pad", doc)
    r = c.get(origin.url + "left-pad", headers={"Accept-Encoding": "identity"})
    assert r.content == doc and "content-encoding" not in r.headers
    assert mirror.count() == 2


def test_eviction_keeps_the_cache_under_its_bound_least_recently_used_first(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    for name in "abcd":
        mirror.serve(f"/files/{name}", name.encode() * 100_000)
    c = client(proxy(cached_rules(origin, [mirror]), "--set", "cache_max_size=300k"))

    for name in "abc":
        assert header(c.get(origin.url + f"files/{name}"))["cache"] == "MISS"
    assert header(c.get(origin.url + "files/a"))["cache"] == "HIT"  # a is now more recent than b and c
    c.get(origin.url + "files/d")  # 400 kB > 300 kB: evict down to 270 kB

    assert header(c.get(origin.url + "files/a"))["cache"] == "HIT"
    assert header(c.get(origin.url + "files/d"))["cache"] == "HIT"
    assert header(c.get(origin.url + "files/b"))["cache"] == "MISS"


def test_with_no_room_on_disk_responses_are_proxied_uncached(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/files/a.whl", b"wheel")
    p = proxy(cached_rules(origin, [mirror]), "--set", "cache_min_free=1000000t")
    c = client(p)

    for _ in range(2):
        r = c.get(origin.url + "files/a.whl")
        assert r.status_code == 200 and r.content == b"wheel"
    assert mirror.count() == 2
    assert "proxying without caching until there is room" in p.text()


def test_offline_stale_metadata_and_cached_artifacts_are_still_served(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/left-pad", b"packument")
    mirror.serve("/left-pad/-/left-pad-1.3.0.tgz", b"tarball")
    c = client(proxy(cached_rules(origin, [mirror], ttl="1ms")))
    c.get(origin.url + "left-pad")
    c.get(origin.url + "left-pad/-/left-pad-1.3.0.tgz")

    mirror.stop()
    origin.stop()  # nothing upstream answers any more

    r = c.get(origin.url + "left-pad")
    assert r.status_code == 200 and r.content == b"packument"
    assert header(r)["cache"] == "STALE" and r.headers["warning"] == '110 - "Response is Stale"'
    assert "fallback" in header(r)
    r = c.get(origin.url + "left-pad/-/left-pad-1.3.0.tgz")
    assert r.content == b"tarball" and header(r)["cache"] == "HIT"


def test_stats_and_purge_while_the_proxy_runs(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    for name in ("a", "b", "c"):
        mirror.serve(f"/files/{name}.whl", name.encode() * 10)
    mirror.serve("/left-pad/-/left-pad-1.0.0.tgz", b"tgz")
    p = proxy(cached_rules(origin, [mirror]))
    c = client(p)
    for path in ("files/a.whl", "files/b.whl", "files/c.whl", "left-pad/-/left-pad-1.0.0.tgz", "files/a.whl"):
        c.get(origin.url + path)

    stats = c.get("http://mirrorgate/cache").json()["cache"]
    assert (stats["entries"], stats["bytes"]) == (4, 33)
    assert (stats["hits"], stats["misses"], stats["hit_ratio"]) == (1, 4, 0.2)

    assert c.post("http://mirrorgate/cache/purge", params={"url": origin.url + "files/a.whl"}).json() == {"purged": 1}
    assert header(c.get(origin.url + "files/a.whl"))["cache"] == "MISS"
    assert c.post("http://mirrorgate/cache/purge", params={"prefix": origin.url + "files/"}).json() == {"purged": 3}
    assert header(c.get(origin.url + "left-pad/-/left-pad-1.0.0.tgz"))["cache"] == "HIT"
    assert c.post("http://mirrorgate/cache/purge", params={"all": "1"}).json() == {"purged": 1}
    assert c.get("http://mirrorgate/cache").json()["cache"]["entries"] == 0

    bad = c.post("http://mirrorgate/cache/purge")
    assert bad.status_code == 400 and "?url=URL" in bad.json()["error"]
    assert c.get("http://mirrorgate/cache/purge").status_code == 405


def test_management_is_refused_to_other_clients(fake, proxy, client):
    origin = fake("origin", "127.0.0.2")
    p = proxy(cached_rules(origin, []), "--set", "admin_clients=10.9.9.0/24")

    r = client(p).post("http://mirrorgate/cache/purge", params={"all": "1"})

    assert r.status_code == 403 and "admin_clients" in r.json()["error"]
