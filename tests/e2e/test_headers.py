"""What crosses the proxy: headers the upstream sees, and bytes the client gets."""

from __future__ import annotations

import gzip

import pytest

from tests.e2e.test_fallback import header, rules_yaml

pytestmark = pytest.mark.e2e


def test_upstream_sees_the_clients_headers_and_none_of_the_proxys(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/pkg", b"ok")
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    client(p).get(origin.url + "pkg", headers={
        "Accept": "application/vnd.npm.install-v1+json", "User-Agent": "npm/11", "Accept-Encoding": "identity",
        "If-None-Match": '"abc"'})

    seen = {k.lower(): v for k, v in mirror.hits[0].headers.items()}
    assert seen["host"] == f"127.0.0.3:{mirror.port}"
    assert seen["accept"] == "application/vnd.npm.install-v1+json"
    assert seen["user-agent"] == "npm/11"
    assert seen["accept-encoding"] == "identity"
    assert seen["if-none-match"] == '"abc"'
    assert not [k for k in seen if k.startswith("x-mirrorgate") or k.startswith("proxy-")]


def test_compressed_bodies_pass_through_byte_for_byte(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    packument = b'{"name": "left-pad", "versions": {}}' * 100
    compressed = gzip.compress(packument, mtime=0)
    mirror.serve("/left-pad", compressed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    with client(p).stream("GET", origin.url + "left-pad", headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())

    assert r.headers["content-encoding"] == "gzip"
    assert raw == compressed  # neither decoded nor re-encoded
    assert int(r.headers["content-length"]) == len(compressed)


def test_mirror_cookies_and_hsts_do_not_reach_the_client(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/f", b"ok", headers={"Set-Cookie": "mirror=1", "Strict-Transport-Security": "max-age=1",
                                       "Cache-Control": "max-age=300"})
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    r = client(p).get(origin.url + "f")

    assert "set-cookie" not in r.headers and "strict-transport-security" not in r.headers
    assert r.headers["cache-control"] == "max-age=300"
    assert header(r)["upstream"] == f"mirror:{mirror.url}"


def test_a_mirror_redirect_is_followed_inside_the_proxy(fake, proxy, client):
    origin, mirror, cdn = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3"), fake("cdn", "127.0.0.4")
    mirror.serve("/a.tgz", b"", status=302, headers={"Location": cdn.url + "packages/a.tgz"})
    cdn.serve("/packages/a.tgz", b"tarball")
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    r = client(p).get(origin.url + "a.tgz")

    assert r.status_code == 200 and r.content == b"tarball"
    assert "location" not in r.headers
    assert origin.count() == 0
