"""Docker Hub through the proxy with the real skopeo as the client: the ping, the token
and the tag come from the origin; manifests by digest and blobs from the mirror, which
the proxy authenticates to itself; every byte by digest is checked; pulls with
credentials never touch the mirror."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_fallback import header
from tests.support.docker import PASSWORD, USER, Registry, image
from tests.support.fakes import WAIT, closed_port
from tests.support.pki import loopback_hostname
from tests.support.proxy import clean_env

# Go sends nothing for localhost or loopback addresses through a proxy.
HOST = loopback_hostname()
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not on PATH (apt-get install skopeo)"),
              pytest.mark.skipif(HOST is None, reason="this machine's name does not resolve to loopback")]

HELLO = image("library/hello", "latest", "hello, world\n")
OLD_HELLO = image("library/hello", "latest", "an older hello\n")
SECRET = image("corp/secret", "1.0", "private bytes\n")


def registry(fake, name: str) -> Registry:
    assert HOST is not None
    return Registry(fake(name, HOST[1], name_in_url=HOST[0]), fake(f"{name}-auth", HOST[1], name_in_url=HOST[0]),
                    fake(f"{name}-cdn", HOST[1], name_in_url=HOST[0]), service=name)


def rules(hub: Registry, mirror_url: str) -> str:
    return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: docker-hub
    match: {hub.registry.url}v2/
    protocol: docker-registry
    mirrors:
      test: [{mirror_url}v2/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 429, 401, 403, 404, 410]
    cache:
      metadata: ['re:/.+/manifests/(?!sha256:)[^/]+']
      artifacts: ['re:/.+/(blobs|manifests)/sha256:[0-9a-f]{{64}}']
      ttl: 1m
      vary: [Accept]
  - name: docker-hub-auth
    match: {hub.auth.url}token
    protocol: docker-auth
"""


def skopeo_copy(p, pki, tmp_path: Path, hub: Registry, name: str, tag: str, creds: str | None = None) -> Path:
    dest = tmp_path / f"image-{len(list(tmp_path.glob('image-*')))}"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    (tmp_path / "registries.conf").write_text("")
    env = {**clean_env(), "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "HTTPS_PROXY": p.url,
           "SSL_CERT_FILE": str(p.trust_bundle(pki.ca, tmp_path / "cas.pem")),
           "REGISTRY_AUTH_FILE": str(home / "auth.json")}
    source = f"docker://{hub.registry.url.split('://')[1]}{name}:{tag}"
    cmd = ["skopeo", "--policy", str(tmp_path / "policy.json"), "--registries-conf", str(tmp_path / "registries.conf"),
           "copy", "--retry-times", "0", *(["--src-creds", creds] if creds else []), source, f"dir:{dest}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-3000:]
    return dest


def assert_copied(dest: Path, img) -> None:
    assert (dest / "manifest.json").read_bytes() == img.manifest
    for digest, data in img.blobs.items():
        assert (dest / digest[7:]).read_bytes() == data


def anonymous_get(c, hub: Registry, path: str):
    """GET a registry path as an anonymous client does: token first, through the proxy."""
    token = c.get(f"{hub.auth.url}token?service=hub&scope=repository:library/hello:pull").json()["token"]
    return c.get(f"{hub.registry.url}v2{path}", headers={"Authorization": f"Bearer {token}"})


def paths(reg: Registry, method: str | None = None) -> list[str]:
    return [h.path for h in reg.registry.hits if method is None or h.method == method]


def test_skopeo_pulls_from_the_mirror_with_the_tag_resolved_at_the_origin(fake, proxy, pki, tmp_path, client):
    hub, mirror = registry(fake, "hub"), registry(fake, "mirror")
    hub.add(HELLO)
    mirror.add(OLD_HELLO)  # the mirror's tag is stale…
    mirror.add(HELLO)  # …but it has the current image by digest
    mirror.tags[("library/hello", "latest")] = OLD_HELLO.digest
    p = proxy(rules(hub, mirror.registry.url))

    assert_copied(skopeo_copy(p, pki, tmp_path, hub, "library/hello", "latest"), HELLO)

    # The origin answered the ping and a HEAD for the tag, nothing else.
    assert set(paths(hub)) == {"/v2/", "/v2/library/hello/manifests/latest"}
    assert paths(hub, "GET") == [p for p in paths(hub, "GET") if p == "/v2/"]
    assert hub.cdn.count() == 0
    # The mirror served the manifest by digest and the blobs (by its CDN redirect,
    # followed inside the proxy), with tokens of its own only: never the client's.
    assert f"/v2/library/hello/manifests/{HELLO.digest}" in paths(mirror, "GET")
    assert "/v2/library/hello/manifests/latest" not in paths(mirror)
    assert sorted(h.path.split("?")[0] for h in mirror.cdn.hits) == sorted(f"/blobs/{d}" for d in HELLO.blobs)
    assert mirror.authorizations() and all(a.removeprefix("Bearer ") in mirror.issued
                                           for a in mirror.authorizations())
    assert not any(a.removeprefix("Bearer ") in hub.issued for a in mirror.authorizations())
    assert all("Authorization" not in h.headers for h in mirror.cdn.hits)

    # Blobs are now in the cache, by digest, for any client.
    r = anonymous_get(client(p), hub, f"/library/hello/blobs/{HELLO.layer}")
    assert r.content == HELLO.blobs[HELLO.layer] and header(r)["cache"] == "HIT"


def test_skopeo_pulls_from_the_origin_when_the_mirror_is_down(fake, proxy, pki, tmp_path):
    hub = registry(fake, "hub")
    hub.add(HELLO)
    p = proxy(rules(hub, f"https://{HOST[0]}:{closed_port(HOST[1])}/"))

    assert_copied(skopeo_copy(p, pki, tmp_path, hub, "library/hello", "latest"), HELLO)

    assert sorted(h.path.split("?")[0] for h in hub.cdn.hits) == sorted(f"/blobs/{d}" for d in HELLO.blobs)


def test_corrupted_blob_on_the_mirror_is_never_served_or_kept(fake, proxy, pki, tmp_path, client):
    hub, mirror = registry(fake, "hub"), registry(fake, "mirror")
    hub.add(HELLO)
    mirror.add(HELLO)
    mirror.corrupt(HELLO.layer)
    mirror.corrupt(HELLO.digest)
    p = proxy(rules(hub, mirror.registry.url))

    assert_copied(skopeo_copy(p, pki, tmp_path, hub, "library/hello", "latest"), HELLO)

    # The origin served the two digests whose mirror bytes were wrong, and only those.
    assert f"/v2/library/hello/manifests/{HELLO.digest}" in paths(hub, "GET")
    assert [h.path.split("?")[0] for h in hub.cdn.hits] == [f"/blobs/{HELLO.layer}"]
    assert "integrity" in p.text()
    # Nothing of the mirror's was kept: the layer is still the origin's redirect.
    r = anonymous_get(client(p), hub, f"/library/hello/blobs/{HELLO.layer}")
    assert r.status_code == 307 and r.content != mirror.blobs[HELLO.layer]
    assert header(r)["upstream"] == f"origin:{hub.registry.url}v2/"


def test_a_pull_with_credentials_never_reaches_the_mirror(fake, proxy, pki, tmp_path):
    hub, mirror = registry(fake, "hub"), registry(fake, "mirror")
    hub.add(SECRET, private=True)
    hub.add(HELLO)
    mirror.add(HELLO)
    p = proxy(rules(hub, mirror.registry.url))

    assert_copied(skopeo_copy(p, pki, tmp_path, hub, "corp/secret", "1.0", creds=f"{USER}:{PASSWORD}"), SECRET)
    assert_copied(skopeo_copy(p, pki, tmp_path, hub, "library/hello", "latest", creds=f"{USER}:{PASSWORD}"), HELLO)

    assert mirror.registry.count() == 0 and mirror.auth.count() == 0
    assert f"/v2/corp/secret/manifests/{SECRET.digest}" in paths(hub) or \
        "/v2/corp/secret/manifests/1.0" in paths(hub, "GET")
