"""What never goes to a mirror, what is refused, and what the access log records."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from tests.e2e.test_fallback import header, rules_yaml
from tests.support.proxy import clean_env

pytestmark = pytest.mark.e2e


def test_credentialed_requests_go_only_to_the_origin(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/private/pkg", b"private bytes")
    mirror.serve("/private/pkg", b"public bytes")
    p = proxy(rules_yaml(origin.url, [mirror.url]))
    c = client(p)

    for creds in ({"Authorization": "Bearer s3cret"}, {"Cookie": "session=s3cret"}):
        r = c.get(origin.url + "private/pkg", headers=creds)
        assert r.content == b"private bytes"
        assert header(r)["upstream"] == f"origin:{origin.url}"
        assert header(r)["route"] == "origin-only (credentials)"
    assert mirror.count() == 0
    assert origin.hits[0].headers["Authorization"] == "Bearer s3cret"


def test_writes_go_only_to_the_origin_with_their_body(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")

    received = []

    async def publish(request):
        from aiohttp import web
        received.append(await request.read())
        return web.Response(status=201, text="published")

    origin.routes["/pkg"] = publish
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    r = client(p).put(origin.url + "pkg", content=b"x" * 100_000)

    assert r.status_code == 201 and received == [b"x" * 100_000]
    assert header(r)["route"] == "origin-only (method PUT)"
    assert mirror.count() == 0


def test_origin_only_paths_skip_the_mirrors(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/-/whoami", b"origin")
    origin.serve("/-/npm/v1/security/audits", b"audit")
    p = proxy(rules_yaml(origin.url, [mirror.url], origin_only="    origin_only: [/-/whoami, /-/npm/v1/]\n"))
    c = client(p)

    assert c.get(origin.url + "-/whoami").content == b"origin"
    assert c.get(origin.url + "-/npm/v1/security/audits").content == b"audit"
    assert mirror.count() == 0


@pytest.mark.parametrize("path", ["a/%2e%2e/b", "a/%2E./b", "a/%zz", "a/./b", "a/../../etc/passwd"])
def test_hostile_paths_are_refused_with_an_explanation(path, fake, proxy, pki, tmp_path):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    p = proxy(rules_yaml(origin.url, [mirror.url]))
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")

    # curl --path-as-is sends the path exactly as given; most clients would tidy it.
    out = subprocess.run(["curl", "-sS", "--path-as-is", "--proxy", p.url, "--cacert", str(bundle),
                          "-o", str(tmp_path / "body"), "-D", str(tmp_path / "head"), "-w", "%{http_code}",
                          origin.url + path], capture_output=True, text=True, timeout=30, env=clean_env())

    assert out.stdout == "400", out.stderr
    assert (tmp_path / "body").read_text().startswith("Mirrorgate refused this request: the path ")
    assert "x-mirrorgate: rule=reg; upstream=none; route=rejected (the path " in (tmp_path / "head").read_text()
    assert origin.count() + mirror.count() == 0


def test_head_requests_carry_headers_and_no_body(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/a.tgz", b"0123456789")
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    r = client(p).head(origin.url + "a.tgz")

    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "10"
    assert mirror.hits[0].method == "HEAD"


def test_a_body_broken_off_mid_way_reaches_the_client_as_an_error(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.broken_body("/a.tgz", promised=100_000, sent=b"x" * 1000)
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    # A short body that looked complete would be worse than an error: the client
    # would cache or install it.
    with pytest.raises(httpx.RemoteProtocolError):
        client(p).get(origin.url + "a.tgz")


def test_profiles_select_the_mirror_set(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/f", b"origin")
    mirror.serve("/f", b"mirror")
    rules = rules_yaml(origin.url, [mirror.url])

    assert client(proxy(rules)).get(origin.url + "f").content == b"mirror"
    r = client(proxy(rules, "--set", "profile=direct")).get(origin.url + "f")
    assert r.content == b"origin" and header(r)["upstream"] == f"origin:{origin.url}"


def read_log_lines(path, n: int, wait: float = 15.0) -> list[dict]:
    # The log line is written when mitmproxy finishes the flow, just after the client
    # has its response.
    deadline = time.monotonic() + wait
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return [json.loads(x) for x in lines]


def test_access_log_has_one_line_per_routed_request(fake, proxy, client, tmp_path):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    origin.serve("/f", b"from origin")
    mirror.serve("/f", b"down", status=503)
    log = tmp_path / "access.log"
    p = proxy(rules_yaml(origin.url, [mirror.url]), "--set", f"access_log={log}")

    client(p).get(origin.url + "f")
    [line] = read_log_lines(log, 1)

    assert line["rule"] == "reg" and line["method"] == "GET"
    assert line["url"] == origin.url + "f"
    assert line["upstream"] == f"origin:{origin.url}"
    assert line["fallbacks"] == [{"upstream": f"mirror:{mirror.url}", "cause": "503"}]
    assert line["status"] == 200 and line["bytes"] == len(b"from origin")
    assert line["duration_ms"] > 0 and line["client"] == "127.0.0.1"
    assert '"rule":"reg"' not in p.text()  # a file replaces the event log


def raw_request(p, line: bytes) -> bytes:
    """Send one plain-http proxy request exactly as given; the whole answer."""
    import socket
    with socket.create_connection(("127.0.0.1", p.port), timeout=30) as s:
        s.sendall(line + b"\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_a_raw_non_ascii_target_is_refused_not_sent_on(fake, proxy):
    origin, mirror = fake("origin", "127.0.0.2", secure=False), fake("mirror", "127.0.0.3", secure=False)
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    # (mitmproxy itself refuses raw non-ASCII in the path of an absolute-form target.)
    answer = raw_request(p, f"GET {origin.url}a?q=caf\u00e9 HTTP/1.1\r\nHost: 127.0.0.2:{origin.port}".encode())

    assert answer.startswith(b"HTTP/1.1 400") and b"outside ASCII; they must be percent-encoded" in answer
    assert origin.count() == mirror.count() == 0


def test_methods_are_case_sensitive_so_get_in_lower_case_is_no_get(fake, proxy):
    origin, mirror = fake("origin", "127.0.0.2", secure=False), fake("mirror", "127.0.0.3", secure=False)
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    answer = raw_request(p, f"get {origin.url}a HTTP/1.1\r\nHost: 127.0.0.2:{origin.port}".encode())

    # An unknown method: the origin's to judge (this one refuses it), as with any method
    # but GET and HEAD; never the relay's.
    assert b"route=origin-only (method get)" in answer
    assert mirror.count() == 0
