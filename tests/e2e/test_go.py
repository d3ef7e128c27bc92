"""Go modules through the proxy with Debian's go command as the judge.

Stand-in for the checksum database: GOSUMDB=off with a go.sum the test writes from the
modules' own h1: hashes, so the go command verifies every .mod and .zip it downloads
exactly as it would against sum.golang.org. The proxy's own answer to the sumdb
`supported` probe is checked separately.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT, closed_port
from tests.support.gomod import module
from tests.support.pki import loopback_hostname
from tests.support.proxy import clean_env

HOST = loopback_hostname()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed (.ci/run installs golang-go)"),
    pytest.mark.skipif(HOST is None, reason="the go command proxies no loopback name but this machine's own, "
                                            "and this machine's name does not resolve to loopback"),
]

MODULES = [module(f"mods.example/{n}", "v1.0.0") for n in ("alpha", "beta", "gamma")]


class GoProxy:
    def __init__(self, fake):
        # Named by this machine's own name: the go command sends nothing for localhost or
        # a loopback address through a proxy.
        self.origin = fake("proxy.golang.org", HOST[1], name_in_url=HOST[0])
        self.mirror = fake("goproxy.cn", HOST[1], name_in_url=HOST[0])
        self.sumdb = fake("sum.golang.org", HOST[1], name_in_url=HOST[0])
        for m in MODULES:
            self.sumdb.serve(f"/lookup/{m.path}@{m.version}",
                             f"1\n{m.gosum}\ngo.sum database tree\n1\nAAAA\n\n— sum.golang.org AAAA\n".encode())
            for f in (self.origin, self.mirror):
                f.serve(f"/{m.path}/@v/list", f"{m.version}\n".encode())
                f.serve(m.url(".info"), m.info, headers={"Content-Type": "application/json"})
                f.serve(m.url(".mod"), m.mod)
                f.serve(m.url(".zip"), m.zip, headers={"Content-Type": "application/zip"})

    def rules(self, mirror_url: str | None = None, extra: str = "") -> str:
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: go-sumdb-via-proxy
    match: {self.origin.url}sumdb/sum.golang.org/
    protocol: go-sumdb
    mirrors:
      test: [{mirror_url or self.mirror.url}sumdb/sum.golang.org/]
  - name: go-proxy
    match: {self.origin.url}
    protocol: {{name: go-proxy, sumdb: {self.sumdb.url}}}
    mirrors:
      test: [{mirror_url or self.mirror.url}]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404, 410]
    cache:
      metadata: ["/**/@v/list", "/**/@latest"]
      artifacts: ["/**/@v/*.zip", "/**/@v/*.mod", 're:/.+/@v/v[0-9]+\\.[0-9]+\\.[0-9]+\\.info']
      ttl: 1m
{extra}"""


def go_mod_download(p, pki, tmp_path, origin_url: str, modules=MODULES) -> None:
    work = tmp_path / "app"
    work.mkdir()
    (work / "go.mod").write_text("module app.example/app\n\ngo 1.19\n\nrequire (\n"
                                 + "".join(f"\t{m.path} {m.version}\n" for m in modules) + ")\n")
    (work / "go.sum").write_text("".join(m.gosum for m in modules))
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    env = {**clean_env(), "HOME": str(tmp_path), "GOPATH": str(tmp_path / "gopath"),
           "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-modcacherw", "GOPROXY": origin_url,
           "GOSUMDB": "off", "GONOSUMDB": "", "GOPRIVATE": "", "GOTOOLCHAIN": "local",
           "HTTPS_PROXY": p.url, "SSL_CERT_FILE": str(bundle)}
    out = subprocess.run(["go", "mod", "download", "-x"], cwd=work, capture_output=True, text=True, env=env,
                         timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-3000:]
    assert (work / "go.sum").read_text() == "".join(m.gosum for m in modules)  # go.sum stays canonical
    for m in modules:
        name = m.path.rsplit("/", 1)[-1]
        assert (tmp_path / "gopath" / "pkg" / "mod" / f"{m.path}@{m.version}" / f"{name}.go").exists()


def test_go_downloads_modules_from_the_mirror(fake, proxy, pki, tmp_path):
    g = GoProxy(fake)
    p = proxy(g.rules())

    go_mod_download(p, pki, tmp_path, g.origin.url)

    assert g.origin.count() == 0
    assert all(g.mirror.count(m.url(".zip")) == 1 for m in MODULES)


def test_go_succeeds_with_the_mirror_down(fake, proxy, pki, tmp_path):
    g = GoProxy(fake)
    p = proxy(g.rules(f"https://{HOST[0]}:{closed_port(HOST[1])}/"))

    go_mod_download(p, pki, tmp_path, g.origin.url)

    assert all(g.origin.count(m.url(".zip")) == 1 for m in MODULES)


def test_go_gets_a_module_the_mirror_lags_behind_on(fake, proxy, pki, tmp_path):
    g = GoProxy(fake)
    lagging = MODULES[1]
    for suffix in (".info", ".mod", ".zip"):
        g.mirror.routes.pop(lagging.url(suffix))  # a 404 here would send go to a slow VCS fetch
    p = proxy(g.rules())

    go_mod_download(p, pki, tmp_path, g.origin.url)

    assert g.origin.count(lagging.url(".zip")) == 1
    assert g.origin.count(MODULES[0].url(".zip")) == 0


def test_go_succeeds_when_the_mirror_serves_a_corrupted_zip(fake, proxy, pki, tmp_path, client):
    g = GoProxy(fake)
    bad = MODULES[2]
    corrupted = bytearray(bad.zip)
    corrupted[len(corrupted) // 3] ^= 0xFF  # the same length, one byte off
    g.mirror.serve(bad.url(".zip"), bytes(corrupted))
    p = proxy(g.rules())

    go_mod_download(p, pki, tmp_path, g.origin.url)  # the go command checks go.sum itself

    assert g.origin.count(bad.url(".zip")) == 1
    assert g.origin.count() == 1
    assert "integrity" in p.text()
    r = client(p).get(g.origin.url.rstrip("/") + bad.url(".zip"))  # the cache kept the good zip
    assert r.content == bad.zip and header(r)["cache"] == "HIT"


def test_the_sumdb_supported_probe_is_answered_by_the_proxy(fake, proxy, client):
    g = GoProxy(fake)
    p = proxy(g.rules())

    r = client(p).get(g.origin.url + "sumdb/sum.golang.org/supported")

    assert r.status_code == 200 and r.content == b""
    assert header(r)["route"] == "answered by Mirrorgate"
    assert g.origin.count() + g.mirror.count() == 0


def test_the_checksum_lookup_runs_while_the_mirror_answers(fake, proxy, client):
    """The sumdb answers only once the mirror has been asked: a proxy that waited for the
    lookup before asking the mirror would never get the record, and would serve the zip
    unchecked and uncached."""
    g = GoProxy(fake)
    m = MODULES[0]
    asked = g.sumdb.gate()
    record = g.sumdb.routes[f"/lookup/{m.path}@{m.version}"]
    zip_route = g.mirror.routes[m.url(".zip")]

    async def lookup(request):
        await asked.wait()
        return await record(request)

    async def mirror_zip(request):
        asked.open()
        return await zip_route(request)

    g.sumdb.routes[f"/lookup/{m.path}@{m.version}"] = lookup
    g.mirror.routes[m.url(".zip")] = mirror_zip
    p = proxy(g.rules())
    c = client(p)

    first = c.get(g.origin.url.rstrip("/") + m.url(".zip"))
    again = c.get(g.origin.url.rstrip("/") + m.url(".zip"))

    assert first.content == m.zip and header(first)["upstream"].startswith("mirror")
    assert header(again)["cache"] == "HIT"  # checked, so kept
    assert g.sumdb.count() == 1
