"""The core promise, end to end: a real mitmproxy process, real TLS on both sides, a
real HTTP client, and fake origin and mirrors on loopback."""

from __future__ import annotations

import pytest

from mirrorgate.trace import parse_header
from tests.support.fakes import Fake, closed_port, server_tls
from tests.support.pki import make_pki

pytestmark = pytest.mark.e2e


def rules_yaml(origin: str, mirrors: list[str], *, fallback_on: str = "", timeouts: str = "",
               circuit: str = "", extra_rules: str = "", origin_only: str = "", cache: str = "") -> str:
    lines = "".join(f"        - {m}\n" for m in mirrors)
    return f"""\
version: 1
profiles:
  test: "fakes"
  direct: "origin only"
default_profile: test
defaults:
  timeouts: {{connect: 2s, first_byte: 5s, idle: 10s}}
rules:
  - name: reg
    match: {origin}
    mirrors:
      test:
{lines}{fallback_on}{timeouts}{circuit}{origin_only}{cache}{extra_rules}"""


def header(resp) -> dict[str, str]:
    return parse_header(resp.headers["X-Mirrorgate"])


def test_request_is_served_by_the_first_mirror(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/pkg/a.tgz", b"from origin")
    mirror.serve("/pkg/a.tgz", b"from mirror", headers={"ETag": '"m1"'})
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    r = client(p).get(origin.url + "pkg/a.tgz")

    assert r.status_code == 200 and r.content == b"from mirror"
    assert r.headers["etag"] == '"m1"'
    assert header(r) == {"rule": "reg", "upstream": f"mirror:{mirror.url}"}
    assert (origin.count(), mirror.count("/pkg/a.tgz")) == (0, 1)


def test_mirror_prefix_with_a_path_maps_the_remainder(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/repository/npm/left-pad?x=1", b"mapped")
    p = proxy(rules_yaml(origin.url, [mirror.url + "repository/npm/"]))

    r = client(p).get(origin.url + "left-pad?x=1")

    assert r.content == b"mapped"
    assert mirror.hits[0].path == "/repository/npm/left-pad?x=1"


@pytest.mark.parametrize("cause", ["connect_error", "502", "timeout", "tls_error"])
def test_each_failure_falls_back_to_the_next_upstream(cause, fake, proxy, client, loops, tmp_path):
    origin, good = fake("origin", "127.0.0.2"), fake("good-mirror", "127.0.0.4")
    origin.serve("/f", b"origin")
    good.serve("/f", b"second mirror")
    if cause == "connect_error":
        bad_url = f"https://127.0.0.3:{closed_port('127.0.0.3')}/"
    elif cause == "tls_error":
        # A certificate from a CA the proxy does not trust: verification stays strict.
        rogue = make_pki(tmp_path / "rogue", "Rogue CA")
        bad = Fake(loops, "rogue-mirror", "127.0.0.3", server_tls(str(rogue.cert), str(rogue.key))).start()
        bad.serve("/f", b"never")
        bad_url = bad.url
    else:
        bad = fake("bad-mirror", "127.0.0.3")
        bad_url = bad.url
        if cause == "502":
            bad.serve("/f", b"bad gateway", status=502)
        else:
            bad.stall("/f", bad.gate())
    timeouts = "    timeouts: {first_byte: 500ms}\n" if cause == "timeout" else ""
    p = proxy(rules_yaml(origin.url, [bad_url, good.url], timeouts=timeouts))

    r = client(p).get(origin.url + "f")

    assert r.status_code == 200 and r.content == b"second mirror"
    h = header(r)
    assert h["upstream"] == f"mirror:{good.url}"
    assert h["fallback"].startswith(f"mirror:{bad_url} ")
    assert h["fallback"] == f"mirror:{bad_url} {cause}"
    assert origin.count() == 0
    if cause == "tls_error":
        assert bad.count() == 0  # the handshake failed before any request was sent
        bad.stop()


def test_origin_is_the_last_resort(fake, proxy, client):
    origin = fake("origin", "127.0.0.2")
    origin.serve("/f", b"origin")
    dead = [f"https://127.0.0.3:{closed_port('127.0.0.3')}/", f"https://127.0.0.4:{closed_port('127.0.0.4')}/"]
    p = proxy(rules_yaml(origin.url, dead))

    r = client(p).get(origin.url + "f")

    assert r.content == b"origin"
    h = header(r)
    assert h["upstream"] == f"origin:{origin.url}"
    assert h["fallback"] == f"mirror:{dead[0]} connect_error, mirror:{dead[1]} connect_error"


def test_a_lagging_mirror_404_goes_to_the_origin_only_where_the_rule_says(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/new-1.0.tgz", b"fresh")
    # The mirror has no /new-1.0.tgz: it 404s.
    lagging = proxy(rules_yaml(origin.url, [mirror.url], fallback_on="    fallback_on: [5xx, 404, connect_error]\n"))
    r = client(lagging).get(origin.url + "new-1.0.tgz")
    assert r.status_code == 200 and r.content == b"fresh"
    assert header(r)["fallback"] == f"mirror:{mirror.url} 404"

    strict = proxy(rules_yaml(origin.url, [mirror.url], fallback_on="    fallback_on: [5xx, connect_error]\n"))
    r = client(strict).get(origin.url + "new-1.0.tgz")
    assert r.status_code == 404
    assert header(r)["upstream"] == f"mirror:{mirror.url}"
    assert origin.count() == 1  # only the first proxy's fallback reached it


def test_when_every_upstream_fails_the_client_gets_a_clear_502(fake, proxy, client):
    dead_origin = f"https://127.0.0.2:{closed_port('127.0.0.2')}/"
    dead_mirror = f"https://127.0.0.3:{closed_port('127.0.0.3')}/"
    p = proxy(rules_yaml(dead_origin, [dead_mirror]))

    r = client(p).get(dead_origin + "f")

    assert r.status_code == 502
    assert "every upstream failed" in r.text and dead_mirror in r.text and dead_origin in r.text
    assert header(r)["upstream"] == "none"


def test_the_origins_own_error_is_passed_through(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/gone", b"no such package", status=404)
    p = proxy(rules_yaml(origin.url, [mirror.url], fallback_on="    fallback_on: [404]\n"))

    r = client(p).get(origin.url + "gone")

    assert r.status_code == 404 and r.content == b"no such package"
    assert header(r)["upstream"] == f"origin:{origin.url}"


def test_the_connect_timeout_is_real(fake, proxy, client, loops):
    """A mirror that accepts TCP but never completes TLS is abandoned after `connect`,
    however long `first_byte` is."""
    import socket
    import threading

    origin = fake("origin", "127.0.0.2")
    origin.serve("/f", b"origin")
    silent = socket.socket()
    silent.bind(("127.0.0.3", 0))
    silent.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])  # accept and say nothing
            except OSError:
                pass

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    try:
        mirror_url = f"https://127.0.0.3:{silent.getsockname()[1]}/"
        p = proxy(rules_yaml(origin.url, [mirror_url],
                             timeouts="    timeouts: {connect: 300ms, first_byte: 60s}\n"))
        r = client(p).get(origin.url + "f", timeout=20)
        assert r.content == b"origin"
        assert header(r)["fallback"] == f"mirror:{mirror_url} timeout"
        assert accepted, "the proxy never reached the silent mirror"
    finally:
        stop.set()
        t.join(5)
        for s in accepted:
            s.close()
        silent.close()
