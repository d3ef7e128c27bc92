"""Pure cache decisions: classes of the shipped rules, keys, freshness, storability and
how a stored entry answers conditional, range and HEAD requests."""

from __future__ import annotations

import pytest

from mirrorgate.cache.policy import (
    Entry, byte_range, cache_key, classify, encoding_acceptable, freshness, merge_not_modified, plan_hit,
    revalidation_headers, storable,
)
from mirrorgate.routing import split_query
from mirrorgate.rules import load_rules, parse_rules
from tests.support.proxy import ROOT

SHIPPED = load_rules(ROOT / "rules" / "default.yaml")


def shipped_class(url: str):
    from urllib.parse import urlsplit
    u = urlsplit(url)
    path = url[len(f"{u.scheme}://{u.netloc}"):]
    found = SHIPPED.lookup(u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80), split_query(path)[0])
    assert found, url
    rule, prefix = found
    return rule.name, classify(rule.cache, prefix.remainder(split_query(path)[0]) or "/")


@pytest.mark.parametrize("url, rule, cls", [
    ("https://proxy.golang.org/github.com/!azure/go-autorest/@v/list", "go-proxy", "metadata"),
    ("https://proxy.golang.org/golang.org/x/mod/@latest", "go-proxy", "metadata"),
    ("https://proxy.golang.org/golang.org/x/mod/@v/v0.17.0.zip", "go-proxy", "artifact"),
    ("https://proxy.golang.org/golang.org/x/mod/@v/v0.17.0.mod", "go-proxy", "artifact"),
    ("https://proxy.golang.org/golang.org/x/mod/@v/v0.17.0.info", "go-proxy", "artifact"),
    ("https://proxy.golang.org/golang.org/x/mod/@v/v0.0.0-20240101000000-abcdef123456.info", "go-proxy", "artifact"),
    ("https://proxy.golang.org/golang.org/x/mod/@v/master.info", "go-proxy", None),
    ("https://proxy.golang.org/golang.org/x/mod/@v/v1.2.info", "go-proxy", None),
    ("https://proxy.golang.org/sumdb/sum.golang.org/supported", "go-sumdb-via-proxy", "metadata"),
    ("https://proxy.golang.org/sumdb/sum.golang.org/latest", "go-sumdb-via-proxy", "metadata"),
    ("https://proxy.golang.org/sumdb/sum.golang.org/lookup/golang.org/x/mod@v0.17.0", "go-sumdb-via-proxy", "artifact"),
    ("https://sum.golang.org/tile/8/0/x123/456.p/7", "go-sumdb", "artifact"),
    ("https://registry.npmjs.org/left-pad", "npm", "metadata"),
    ("https://registry.npmjs.org/@babel/core", "npm", "metadata"),
    ("https://registry.npmjs.org/@babel%2fcore", "npm", "metadata"),
    ("https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz", "npm", "artifact"),
    ("https://registry.npmjs.org/@babel/core/-/core-7.24.0.tgz", "npm", "artifact"),
    ("https://registry.npmjs.org/left-pad/1.3.0", "npm", None),
    ("https://pypi.org/simple/requests/", "pypi-simple", "metadata"),
    ("https://files.pythonhosted.org/packages/ab/cd/" + "e" * 60 + "/requests-2.32.0-py3-none-any.whl",
     "pypi-files", "artifact"),
    ("https://registry-1.docker.io/v2/library/alpine/manifests/3.20", "docker-hub", "metadata"),
    ("https://registry-1.docker.io/v2/library/alpine/manifests/sha256:" + "a" * 64, "docker-hub", "artifact"),
    ("https://registry-1.docker.io/v2/library/alpine/blobs/sha256:" + "b" * 64, "docker-hub", "artifact"),
    ("https://registry-1.docker.io/v2/", "docker-hub", None),
    ("https://repo1.maven.org/maven2/org/slf4j/slf4j-api/maven-metadata.xml", "maven-central", "metadata"),
    ("https://repo1.maven.org/maven2/org/slf4j/slf4j-api/maven-metadata.xml.sha1", "maven-central", "metadata"),
    ("https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.13/slf4j-api-2.0.13.jar", "maven-central",
     "artifact"),
    ("https://repo1.maven.org/maven2/org/slf4j/slf4j-api/2.0.13/slf4j-api-2.0.13.pom.sha1", "maven-central",
     "artifact"),
    ("https://repo1.maven.org/maven2/org/slf4j/", "maven-central", None),
    ("https://index.crates.io/se/rd/serde", "crates-index", "metadata"),
    ("https://static.crates.io/crates/serde/serde-1.0.200.crate", "crates-files", "artifact"),
    ("https://static.crates.io/crates/serde/1.0.200/download", "crates-files", "artifact"),
    ("https://index.rubygems.org/info/rails", "rubygems", "metadata"),
    ("https://rubygems.org/gems/rails-7.1.3.gem", "rubygems", "artifact"),
    ("http://deb.debian.org/debian/dists/bookworm/InRelease", "debian", "metadata"),
    ("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz", "debian", "metadata"),
    ("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + "c" * 64, "debian",
     "artifact"),
    ("http://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10_amd64.deb", "debian", "artifact"),
    ("http://archive.ubuntu.com/ubuntu/pool/main/c/curl/curl_8.5.0_amd64.deb", "ubuntu", "artifact"),
    ("https://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/APKINDEX.tar.gz", "alpine", "metadata"),
    ("https://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/curl-8.9.0-r0.apk", "alpine", "artifact"),
    ("https://conda.anaconda.org/conda-forge/linux-64/repodata.json.zst", "conda", "metadata"),
    ("https://conda.anaconda.org/conda-forge/linux-64/numpy-2.0.0-py312h0_0.conda", "conda", "artifact"),
    ("https://conda.anaconda.org/conda-forge/noarch/pip-24.0-pyhd8ed1ab_0.tar.bz2", "conda", "artifact"),
    ("https://huggingface.co/gpt2/resolve/" + "1" * 40 + "/config.json", "huggingface", "artifact"),
    ("https://huggingface.co/gpt2/resolve/main/config.json", "huggingface", None),
])
def test_shipped_rules_classify_each_registry(url, rule, cls):
    assert shipped_class(url) == (rule, cls)


POLICY = parse_rules("""
version: 1
profiles: {p: ""}
default_profile: p
rules:
  - name: r
    match: https://r.example/
    cache:
      metadata: ["/*"]
      artifacts: ["/**/-/*.tgz"]
      ttl: 60s
      negative_ttl: 10s
      vary: [Accept]
""").rules[0].cache
assert POLICY is not None


def entry(**kw) -> Entry:
    base = dict(key="k", url="https://r.example/a", cls="artifact", status=200,
                headers=(("ETag", '"e1"'), ("Last-Modified", "Wed, 21 Oct 2026 07:28:00 GMT"),
                         ("Content-Type", "application/octet-stream"), ("Content-Length", "999")),
                size=100, stored_at=1000.0, validated_at=1000.0)
    return Entry(**{**base, **kw})


def test_keys_are_origin_urls_and_vary_only_for_metadata():
    assert cache_key("https://r.example/a/-/a-1.tgz", "artifact", POLICY, {"accept": "x"}) == \
        "https://r.example/a/-/a-1.tgz"
    assert cache_key("https://r.example/a", "metadata", POLICY, {"accept": "application/json"}) == \
        "https://r.example/a\naccept: application/json"
    assert cache_key("https://r.example/a", "metadata", POLICY, {"accept": "  a,\n b "}) == \
        "https://r.example/a\naccept: a, b"
    assert cache_key("https://r.example/a", "metadata", POLICY, {}) == "https://r.example/a\naccept: "


def test_freshness():
    assert freshness(entry(), POLICY, 10**9) == "fresh"  # artifacts never go stale
    meta = entry(cls="metadata")
    assert freshness(meta, POLICY, 1059.9) == "fresh"
    assert freshness(meta, POLICY, 1060.0) == "stale"
    negative = entry(status=404)
    assert freshness(negative, POLICY, 1009.9) == "fresh"
    assert freshness(negative, POLICY, 1010.0) == "expired"


@pytest.mark.parametrize("status, headers, from_origin, expected", [
    (200, [], False, True),
    (200, [("Cache-Control", "public, max-age=60")], False, True),
    (200, [("Cache-Control", "no-store")], True, False),
    (200, [("cache-control", "Private")], True, False),
    (404, [], True, True),
    (404, [], False, False),
    (206, [], True, False),
    (301, [], True, False),
    (500, [], True, False),
])
def test_storable(status, headers, from_origin, expected):
    assert storable(status, headers, from_origin) is expected


def test_revalidation_uses_the_stored_validators_and_a_304_keeps_the_body_headers():
    e = entry()
    assert revalidation_headers(e) == {"If-None-Match": '"e1"', "If-Modified-Since": "Wed, 21 Oct 2026 07:28:00 GMT"}
    assert revalidation_headers(entry(headers=())) == {}
    merged = merge_not_modified(e.headers, [("ETag", '"e1"'), ("Cache-Control", "max-age=5"), ("Content-Length", "0")])
    assert dict(merged) == {"ETag": '"e1"', "Last-Modified": "Wed, 21 Oct 2026 07:28:00 GMT",
                            "Content-Type": "application/octet-stream", "Content-Length": "999",
                            "Cache-Control": "max-age=5"}


@pytest.mark.parametrize("value, size, expected", [
    ("bytes=0-9", 100, (0, 10)),
    ("bytes=90-", 100, (90, 10)),
    ("bytes=90-500", 100, (90, 10)),
    ("bytes=-5", 100, (95, 5)),
    ("bytes=-500", 100, (0, 100)),
    ("bytes=100-", 100, "unsatisfiable"),
    ("bytes=-0", 100, "unsatisfiable"),
    ("bytes=-5", 0, "unsatisfiable"),
    ("bytes=5-1", 100, None),
    ("bytes=0-1,5-6", 100, None),
    ("items=0-1", 100, None),
    ("bytes=-", 100, None),
])
def test_byte_range(value, size, expected):
    assert byte_range(value, size) == expected


@pytest.mark.parametrize("accept, coding, ok", [
    (None, "gzip", True), ("gzip, deflate", "gzip", True), ("identity", "gzip", False),
    ("gzip;q=0", "gzip", False), ("*", "br", True), ("*;q=0", "br", False), ("br", None, True),
    ("x-gzip", "gzip", True), ("deflate", "gzip", False),
])
def test_encoding_acceptable(accept, coding, ok):
    assert encoding_acceptable(accept, coding) is ok


def test_plan_hit_full_head_and_conditional():
    e = entry()
    full = plan_hit(e, "GET", {})
    assert (full.status, full.start, full.length) == (200, 0, 100)
    assert dict(full.headers)["Content-Length"] == "100"  # the stored body's size, not the upstream's claim
    head = plan_hit(e, "HEAD", {})
    assert (head.status, head.length, dict(head.headers)["Content-Length"]) == (200, 0, "100")
    assert plan_hit(e, "GET", {"if-none-match": 'W/"e1"'}).status == 304
    assert plan_hit(e, "GET", {"if-none-match": '"other", "e1"'}).status == 304
    assert plan_hit(e, "GET", {"if-none-match": '"other"'}).status == 200
    assert plan_hit(e, "GET", {"if-modified-since": "Wed, 21 Oct 2026 07:28:00 GMT"}).status == 304
    assert plan_hit(e, "GET", {"if-modified-since": "Tue, 20 Oct 2026 07:28:00 GMT"}).status == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    assert plan_hit(e, "GET", {"if-none-match": '"x"', "if-modified-since": "Wed, 21 Oct 2026 07:28:00 GMT"}).status == 200


def test_plan_hit_ranges_and_if_range():
    e = entry()
    r = plan_hit(e, "GET", {"range": "bytes=10-19"})
    assert (r.status, r.start, r.length) == (206, 10, 10)
    assert dict(r.headers)["Content-Range"] == "bytes 10-19/100"
    assert plan_hit(e, "GET", {"range": "bytes=200-"}).status == 416
    assert plan_hit(e, "GET", {"range": "bytes=0-1", "if-range": '"e1"'}).status == 206
    assert plan_hit(e, "GET", {"range": "bytes=0-1", "if-range": '"stale"'}).status == 200
    assert plan_hit(e, "GET", {"range": "bytes=0-1", "if-range": "Wed, 21 Oct 2026 07:28:00 GMT"}).status == 206
    assert plan_hit(e, "HEAD", {"range": "bytes=0-1"}).status == 200


def test_plan_hit_respects_content_coding_and_negative_entries():
    gz = entry(headers=(("Content-Encoding", "gzip"),))
    assert plan_hit(gz, "GET", {"accept-encoding": "identity"}) is None
    hit = plan_hit(gz, "GET", {"accept-encoding": "gzip"})
    assert dict(hit.headers)["Content-Encoding"] == "gzip"
    negative = plan_hit(entry(status=404, headers=(("ETag", '"e1"'),)), "GET", {"if-none-match": '"e1"'})
    assert (negative.status, negative.length) == (404, 100)
