"""A gateway behind a corporate parent proxy (`--mode upstream:URL`): every upstream
fetch, the relay's to mirrors and origins as well as mitmproxy's own tunnels and
origin-only requests, goes through the parent; the hand-over to the relay does not."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.test_fallback import header, rules_yaml
from tests.support.fakes import WAIT, closed_port
from tests.support.parent_proxy import ParentProxy
from tests.support.proxy import clean_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def parent(loops):
    made: list[ParentProxy] = []

    def make(credentials: str | None = None) -> ParentProxy:
        made.append(ParentProxy(loops, credentials).start())
        return made[-1]

    yield make
    for p in made:
        p.stop()


def test_mirror_and_origin_fetches_and_tunnels_go_through_the_parent(fake, proxy, client, parent):
    origin, mirror, other = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3"), fake("other", "127.0.0.4")
    origin.serve("/a.tgz", b"from origin")
    origin.serve("/b.tgz", b"b from origin")
    origin.serve("/private", b"yours")
    mirror.serve("/a.tgz", b"from mirror")
    other.serve("/x", b"not a registry")
    up = parent(credentials="corp:pw")
    p = proxy(rules_yaml(origin.url, [mirror.url], fallback_on="    fallback_on: [connect_error, 5xx, 404]\n"),
              "--mode", f"upstream:{up.url}", "--set", "upstream_auth=corp:pw")
    c = client(p)

    assert c.get(origin.url + "a.tgz").content == b"from mirror"  # relay → mirror
    assert c.get(origin.url + "b.tgz").content == b"b from origin"  # relay → mirror 404 → origin
    r = c.get(origin.url + "private", headers={"Authorization": "Bearer x"})  # mitmproxy → origin
    assert r.content == b"yours" and header(r)["route"] == "origin-only (credentials)"
    assert c.get(other.url + "x").content == b"not a registry"  # an untouched tunnel

    tunnels = up.tunnels()
    assert tunnels.count("127.0.0.3:%d" % mirror.port) == 1
    assert tunnels.count("127.0.0.2:%d" % origin.port) == 2
    assert "127.0.0.4:%d" % other.port in tunnels
    assert not [t for t in tunnels if t.startswith("127.0.0.1:")]  # never the relay hand-over
    assert mirror.count() == 2 and origin.count() == 2


def test_plain_http_origins_reach_the_parent_in_absolute_form(fake, proxy, parent, tmp_path):
    origin, mirror = fake("deb", "127.0.0.2", secure=False), fake("deb-mirror", "127.0.0.3", secure=False)
    mirror.serve("/debian/pool/x.deb", b"deb bytes")
    up = parent()
    p = proxy(rules_yaml(origin.url + "debian/", [mirror.url + "debian/"]), "--mode", f"upstream:{up.url}")

    out = subprocess.run(["curl", "-sS", "--fail", "-x", p.url, origin.url + "debian/pool/x.deb"],
                         capture_output=True, env=clean_env(), timeout=WAIT)

    assert out.returncode == 0 and out.stdout == b"deb bytes", out.stderr
    assert f"GET http://127.0.0.3:{mirror.port}/debian/pool/x.deb" in up.seen


def test_a_parent_that_is_down_is_a_failed_upstream_not_a_hang(fake, proxy, client):
    origin = fake("origin", "127.0.0.2")
    origin.serve("/a.tgz", b"from origin")
    p = proxy(rules_yaml(origin.url, []), "--mode", f"upstream:http://127.0.0.1:{closed_port()}")

    r = client(p).get(origin.url + "a.tgz")

    assert r.status_code == 502 and "connect_error" in r.text
    assert origin.count() == 0


def test_a_non_http_parent_is_refused_at_start(tmp_path):
    from tests.support.proxy import run_to_exit
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_yaml("https://origin.example/", []))
    out = run_to_exit(rules, tmp_path / "confdir", "--mode", "upstream:https://parent.example:3128")
    assert out.returncode != 0
    assert "Mirrorgate's own fetches reach a parent proxy over plain http only" in out.stdout + out.stderr
