"""Credential safety and private packages, with the real npm and go: no credential ever
reaches a mirror, a request with credentials goes to the origin and stays out of the
shared cache, and a rule's private patterns send an npm scope or a Go module prefix to
the origin or a private registry only."""

from __future__ import annotations

import pytest

from tests.e2e.test_fallback import header
from tests.e2e.test_go import GoProxy, go_mod_download, MODULES
from tests.e2e.test_npm import Npm, npm_install, resolved
from tests.support.gomod import module
from tests.support.npm import package, packument

pytestmark = pytest.mark.e2e

CREDENTIALS = ({"Authorization": "Bearer npm_secret"}, {"Cookie": "session=secret"},
               {"Authorization": "Basic dXNlcjpzZWNyZXQ="})


def test_no_credential_ever_reaches_a_mirror_and_none_is_cached(fake, proxy, client):
    npm = Npm(fake, names=["pkg-a", "pkg-b"])
    p = proxy(npm.rules())
    c = client(p)
    pkg = npm.packages["pkg-a"]

    anonymous = c.get(npm.origin.url + "pkg-a")  # the mirror serves, the cache keeps
    assert header(anonymous)["upstream"].startswith("mirror:")
    for creds in CREDENTIALS:
        for path in ("pkg-a", "pkg-b", pkg.tarball_path.lstrip("/")):
            r = c.get(npm.origin.url + path, headers=creds)
            assert r.status_code == 200
            # Straight to the origin: not the mirror, not the shared cache's copy.
            assert header(r)["upstream"] == f"origin:{npm.origin.url}" and "cache" not in header(r)
    assert npm.mirror.hits, "the mirror served the anonymous request"
    assert not [h for h in npm.mirror.hits + npm.cdn.hits
                if {"authorization", "cookie"} & {k.lower() for k in h.headers}]
    # What the origin sent to a client with credentials was not kept for anyone.
    later = c.get(npm.origin.url + "pkg-b")
    assert header(later)["cache"] == "MISS" and header(later)["upstream"].startswith("mirror:")


def test_npm_with_a_token_installs_from_the_origin_only(fake, proxy, pki, tmp_path):
    npm = Npm(fake, names=["pkg-a", "@corp/scoped"])
    p = proxy(npm.rules())
    host = npm.origin.url.split("://")[1]

    lock = npm_install(p, pki, tmp_path, npm.origin.url, names=list(npm.packages),
                       npmrc=f"//{host}:_authToken=npm_secret\n")

    assert resolved(lock) == {n: f"{npm.origin.url.rstrip('/')}{pk.tarball_path}" for n, pk in npm.packages.items()}
    assert npm.mirror.count() == npm.cdn.count() == 0
    assert all(h.headers.get("Authorization") == "Bearer npm_secret" for h in npm.origin.hits)


def private_npm_rules(npm: Npm, registry: str | None) -> str:
    target = f", registry: {registry}" if registry else ""
    return npm.rules(extra=f'    private:\n      - {{paths: ["/@corp/**"]{target}}}\n')


def test_a_private_npm_scope_reaches_only_its_registry(fake, proxy, pki, tmp_path, client):
    npm = Npm(fake, names=["pkg-a", "@corp/scoped"])
    corp = fake("npm.corp", name_in_url="localhost")
    secret = package("@corp/scoped", "1.0.0")
    corp.serve(secret.packument_path, packument([secret], corp.url), headers={"Content-Type": "application/json"})
    corp.serve(secret.tarball_path, secret.tarball)
    p = proxy(private_npm_rules(npm, corp.url))

    lock = npm_install(p, pki, tmp_path, npm.origin.url, names=list(npm.packages))

    assert resolved(lock)["@corp/scoped"] == f"{corp.url.rstrip('/')}{secret.tarball_path}"
    assert resolved(lock)["pkg-a"] == f"{npm.origin.url.rstrip('/')}{npm.packages['pkg-a'].tarball_path}"
    assert corp.count(secret.packument_path) >= 1 and corp.count(secret.tarball_path) == 1
    assert not [h for h in npm.mirror.hits + npm.origin.hits if "corp" in h.path]
    assert npm.mirror.count(npm.packages["pkg-a"].packument_path) == 1  # the public package still mirrored
    r = client(p).get(npm.origin.url + "@corp%2fscoped")
    assert header(r) == {"rule": "npm", "upstream": f"private:{corp.url}", "route": "private /@corp/**"}


def test_a_private_npm_scope_without_a_registry_goes_to_the_origin(fake, proxy, client):
    npm = Npm(fake, names=["pkg-a", "@corp/scoped"])
    p = proxy(private_npm_rules(npm, None))
    c = client(p)

    for _ in range(2):
        r = c.get(npm.origin.url + "@corp%2fscoped")
        assert r.status_code == 200 and header(r)["upstream"] == f"origin:{npm.origin.url}"
        assert "cache" not in header(r)
    assert npm.origin.count("/@corp%2fscoped") == 2 and npm.mirror.count() == 0


def test_a_private_go_module_prefix_reaches_only_the_private_proxy(fake, proxy, pki, tmp_path):
    g = GoProxy(fake)
    corp = fake("athens.corp", g.origin.host, name_in_url=g.origin.name_in_url)
    secret = module("corp.example/secret", "v1.2.0")
    for path, body in ((f"/{secret.path}/@v/list", f"{secret.version}\n".encode()), (secret.url(".info"), secret.info),
                       (secret.url(".mod"), secret.mod), (secret.url(".zip"), secret.zip)):
        corp.serve(path, body)
    p = proxy(g.rules(extra=f'    private:\n      - {{paths: ["/corp.example/**"], registry: {corp.url}}}\n'))

    go_mod_download(p, pki, tmp_path, g.origin.url, modules=[*MODULES, secret])

    assert corp.count(secret.url(".zip")) == 1
    assert not [h for h in g.mirror.hits + g.origin.hits + g.sumdb.hits if "corp.example" in h.path]
    assert all(g.mirror.count(m.url(".zip")) == 1 for m in MODULES)
