"""npm through the proxy with the real npm as the judge: packuments from a mirror are
rewritten so package-lock.json keeps origin URLs, the mirror's CDN redirect is followed
inside the proxy, and tarballs are checked against dist.integrity."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.support.fakes import WAIT, closed_port
from tests.support.npm import Package, package, packument
from tests.support.proxy import clean_env

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (.ci/run installs it)")]

NAMES = [f"pkg-{c}" for c in "abcdefghijklmnopqrs"] + ["@corp/scoped"]


class Npm:
    """An origin registry, a mirror whose packuments name its own host, and the CDN its
    tarball URLs redirect to (as npmmirror does)."""

    def __init__(self, fake, names=NAMES):
        # Named "localhost", not by IP: Node sends no SNI for an IP address, and then
        # mitmproxy cannot know which certificate to present.
        self.origin = fake("registry.npmjs.org", name_in_url="localhost")
        self.mirror = fake("npmmirror", name_in_url="localhost")
        self.cdn = fake("cdn.npmmirror", name_in_url="localhost")
        self.packages = {n: package(n, "1.0.0") for n in names}
        for p in self.packages.values():
            self.origin.serve(p.packument_path, packument([p], self.origin.url), headers={"Content-Type": "application/json"})
            self.origin.serve(p.tarball_path, p.tarball)
            self.mirror.serve(p.packument_path, packument([p], self.mirror.url), headers={"Content-Type": "application/json"})
            self.mirror.serve(p.tarball_path, b"", status=302,
                              headers={"Location": f"{self.cdn.url}packages{p.tarball_path}"})
            self.cdn.serve(f"/packages{p.tarball_path}", p.tarball)

    def rules(self, mirror_url: str | None = None, extra: str = "") -> str:
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: npm
    match: {self.origin.url}
    protocol: npm
    mirrors:
      test: [{mirror_url or self.mirror.url}]
    origin_only: [/-/user/, /-/whoami, /-/v1/login, /-/npm/v1/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache:
      metadata: ["/*", "/@*/*"]
      artifacts: ["/**/-/*.tgz"]
      ttl: 5m
      vary: [Accept]
{extra}"""


def npm_install(p, pki, tmp_path, registry: str, names=NAMES, npmrc: str = "") -> dict:
    """The real npm, configured only by what we pass: the machine's npmrc files (one sets
    a cafile, one omits resolved URLs) must not change what it does."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps(
        {"name": "app", "version": "1.0.0", "private": True, "dependencies": {n: "1.0.0" for n in names}}))
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    (tmp_path / "npmrc").write_text(npmrc)
    (tmp_path / "npmrc-global").write_text("")
    env = {**clean_env(), "HOME": str(tmp_path), "NODE_EXTRA_CA_CERTS": str(bundle)}
    out = subprocess.run(
        ["npm", "install", "--userconfig", str(tmp_path / "npmrc"), "--globalconfig", str(tmp_path / "npmrc-global"),
         "--registry", registry, "--proxy", p.url, "--https-proxy", p.url, "--cafile", str(bundle),
         "--cache", str(tmp_path / "npm-cache"), "--no-audit", "--no-fund", "--no-update-notifier",
         "--loglevel", "error"],
        cwd=project, capture_output=True, text=True, env=env, timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-3000:]
    return json.loads((project / "package-lock.json").read_text())


def resolved(lock: dict) -> dict[str, str]:
    return {k.removeprefix("node_modules/"): v["resolved"] for k, v in lock["packages"].items() if k}


def expected(npm: Npm) -> dict[str, str]:
    return {n: f"{npm.origin.url.rstrip('/')}{p.tarball_path}" for n, p in npm.packages.items()}


def test_npm_installs_from_the_mirror_with_a_canonical_lockfile(fake, proxy, pki, tmp_path):
    npm = Npm(fake)
    p = proxy(npm.rules())

    lock = npm_install(p, pki, tmp_path, npm.origin.url)

    assert resolved(lock) == expected(npm)
    assert {k.removeprefix("node_modules/"): v["integrity"] for k, v in lock["packages"].items() if k} == \
        {n: pkg.integrity for n, pkg in npm.packages.items()}
    assert npm.cdn.count() == len(NAMES)  # every tarball came from the mirror's CDN
    assert npm.origin.count() == 0


def test_npm_succeeds_when_the_mirror_serves_corrupted_tarballs(fake, proxy, pki, tmp_path, client):
    npm = Npm(fake)
    bad: Package = npm.packages["@corp/scoped"]
    npm.cdn.serve(f"/packages{bad.tarball_path}", bytes(b ^ 0x5A for b in bad.tarball))  # same length
    p = proxy(npm.rules())

    lock = npm_install(p, pki, tmp_path, npm.origin.url)

    assert resolved(lock) == expected(npm)
    assert npm.origin.count(bad.tarball_path) == 1  # the good bytes came from the origin
    assert npm.origin.count() == 1
    assert "integrity" in p.text()
    # The cache holds the origin's bytes; the mirror's were never kept.
    r = client(p).get(npm.origin.url.rstrip("/") + bad.tarball_path)
    assert r.content == bad.tarball and "cache=HIT" in r.headers["x-mirrorgate"]


def test_npm_succeeds_with_the_mirror_down(fake, proxy, pki, tmp_path):
    npm = Npm(fake)
    p = proxy(npm.rules(f"https://localhost:{closed_port()}/"))

    lock = npm_install(p, pki, tmp_path, npm.origin.url)

    assert resolved(lock) == expected(npm)
    assert npm.origin.count() == 2 * len(NAMES)


def test_npm_finds_a_package_the_mirror_lags_behind_on(fake, proxy, pki, tmp_path):
    npm = Npm(fake)
    lagging = npm.packages["pkg-c"]
    npm.mirror.routes.pop(lagging.packument_path)  # not synced: the mirror 404s it
    p = proxy(npm.rules())

    lock = npm_install(p, pki, tmp_path, npm.origin.url)

    assert resolved(lock) == expected(npm)
    assert npm.mirror.count(lagging.packument_path) == 1
    assert npm.origin.count(lagging.packument_path) == 1


def test_a_rewritten_packument_has_its_own_length_and_etag(fake, proxy, client):
    npm = Npm(fake, ["@corp/scoped"])
    p = proxy(npm.rules())
    pkg = npm.packages["@corp/scoped"]

    r = client(p).get(npm.origin.url.rstrip("/") + pkg.packument_path,
                      headers={"Accept": "application/vnd.npm.install-v1+json"})

    doc = r.json()
    assert doc["versions"]["1.0.0"]["dist"]["tarball"] == f"{npm.origin.url.rstrip('/')}{pkg.tarball_path}"
    assert doc["versions"]["1.0.0"]["dist"]["integrity"] == pkg.integrity
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.headers["etag"].startswith('"mg-')
    again = client(p).get(npm.origin.url.rstrip("/") + pkg.packument_path,
                          headers={"Accept": "application/vnd.npm.install-v1+json", "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_a_tarball_that_cannot_be_checked_is_served_but_never_kept(fake, proxy, client):
    npm = Npm(fake, ["pkg-a"])
    pkg = npm.packages["pkg-a"]
    npm.origin.routes.pop(pkg.packument_path)  # no packument anywhere: no integrity to check against
    npm.mirror.routes.pop(pkg.packument_path)
    p = proxy(npm.rules())
    c = client(p)

    for _ in range(2):
        r = c.get(npm.origin.url.rstrip("/") + pkg.tarball_path)
        assert r.content == pkg.tarball and "cache=MISS" in r.headers["x-mirrorgate"]
    assert npm.cdn.count() == 2  # unchecked mirror bytes were not kept
