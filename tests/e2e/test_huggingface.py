"""Hugging Face Hub through the proxy with the real huggingface_hub as the judge: file
metadata and small files from the mirror, files resolved by commit checked against what
the origin says about them (the LFS sha256, the git blob id), a mirror's redirects and
links reaching the client naming huggingface.co, and tokens never reaching a mirror."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT, closed_port
from tests.support.huggingface import (COMMIT, CONFIG, FILES, REPO, WEIGHTS, RepoFile, cdn_answer, redirect,
                                       resolve_answer)
from tests.support.proxy import clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    __import__("importlib").util.find_spec("huggingface_hub") is None,
    reason="huggingface_hub (>=1,<2) is not installed")]

MIRROR_PREFIX = "hf/"  # a mirror prefix with a path: relative redirects must be mapped, not passed


class Hub:
    """The origin (huggingface.co), its CDN (not a rule's host: clients reach it through
    an untouched tunnel), and a mirror below /hf/ that redirects LFS files to the Hub's
    CDN as hf-mirror.com does."""

    def __init__(self, fake):
        self.origin = fake("huggingface.co", "127.0.0.2")
        self.mirror = fake("hf-mirror", "127.0.0.3")
        self.cdn = fake("cdn-lfs.hf.co", "127.0.0.5")
        for f in FILES:
            if f.lfs:
                self.cdn.routes[f.cdn_path] = cdn_answer(f.data)
            for revision in ("main", COMMIT):
                self.origin.routes[f.resolve(revision)] = resolve_answer(f, self.cdn_url(f, "origin"))
                self.mirror_serves(f, revision)

    def cdn_url(self, f: RepoFile, signer: str) -> str:
        return f"{self.cdn.url.rstrip('/')}{f.cdn_path}?X-Amz-Signature={signer}"

    def mirror_serves(self, f: RepoFile, revision: str = COMMIT, location: str | None = None,
                      body: bytes | None = None) -> None:
        link = f'<{self.mirror.url}{MIRROR_PREFIX}api/models/{REPO}/xet-read-token/{COMMIT}>; rel="xet-auth"'
        self.mirror.routes[f"/{MIRROR_PREFIX.rstrip('/')}{f.resolve(revision)}"] = resolve_answer(
            f, location or self.cdn_url(f, "mirror"), {"Link": link} if f.lfs else None, body)

    def mirror_route(self, path: str) -> str:
        return f"/{MIRROR_PREFIX.rstrip('/')}{path}"

    def rules(self, mirror_url: str | None = None) -> str:
        mirror = (mirror_url or self.mirror.url) + MIRROR_PREFIX
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
defaults:
  timeouts: {{connect: 3s, first_byte: 15s, idle: 30s}}
rules:
  - name: huggingface
    match: {self.origin.url}
    protocol: huggingface
    mirrors:
      test: [{mirror}]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 429, 404, 410]
    cache:
      artifacts: ['re:/.+/resolve/[0-9a-f]{{40}}/.+']
"""


def hf_download(p, pki, tmp_path: Path, origin_url: str, files: list[str], revision: str = COMMIT,
                repo: str = REPO, token: str | None = None) -> list[bytes]:
    """The real hf_hub_download, in a clean environment of its own, through the proxy."""
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    env = {k: v for k, v in clean_env().items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": origin_url.rstrip("/"), "HF_HOME": str(tmp_path / "hf-home"),
                "HTTPS_PROXY": p.url, "HTTP_PROXY": p.url, "SSL_CERT_FILE": str(bundle),
                "REQUESTS_CA_BUNDLE": str(bundle), "CURL_CA_BUNDLE": str(bundle),
                "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_ETAG_TIMEOUT": "30", "HF_HUB_DOWNLOAD_TIMEOUT": "30"})
    if token:
        env["HF_TOKEN"] = token
    script = ("import json, sys\nfrom huggingface_hub import hf_hub_download\n"
              "repo, revision, files = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
              "print(json.dumps([hf_hub_download(repo, f, revision=revision) for f in files]))\n")
    out = subprocess.run([sys.executable, "-c", script, repo, revision, *files], check=False, capture_output=True,
                         text=True, env=env, timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-4000:]
    paths = json.loads(out.stdout.strip().splitlines()[-1])
    return [Path(path).read_bytes() for path in paths]


def resolve_hits(fake, method: str | None = None) -> list[tuple[str, str]]:
    return [(h.method, h.path) for h in fake.hits if "/resolve/" in h.path and method in (None, h.method)]


def test_hf_hub_download_by_commit_through_the_mirror(fake, proxy, pki, tmp_path, client):
    hub = Hub(fake)
    p = proxy(hub.rules())

    got = hf_download(p, pki, tmp_path, hub.origin.url, [CONFIG.name, WEIGHTS.name])

    assert got == [CONFIG.data, WEIGHTS.data]
    # Metadata (HEAD) and the small file from the mirror; the LFS bytes from the CDN the
    # mirror's redirect named.
    assert sorted(resolve_hits(hub.mirror)) == sorted([
        ("HEAD", hub.mirror_route(CONFIG.resolve())), ("GET", hub.mirror_route(CONFIG.resolve())),
        ("HEAD", hub.mirror_route(WEIGHTS.resolve()))])
    assert [h.path for h in hub.cdn.hits] == [f"{WEIGHTS.cdn_path}?X-Amz-Signature=mirror"]
    # The origin only answered the proxy's own question: what config.json must be.
    assert resolve_hits(hub.origin) == [("HEAD", CONFIG.resolve())]
    again = client(p).get(hub.origin.url + CONFIG.resolve().lstrip("/"))
    assert again.content == CONFIG.data and header(again)["cache"] == "HIT"


def test_hf_hub_download_follows_a_mirror_redirect_mapped_onto_the_origin(fake, proxy, pki, tmp_path):
    """A renamed repository: the mirror answers with a relative redirect, which names a
    path below its own prefix; the client must be sent to the origin's equivalent."""
    hub = Hub(fake)
    old = RepoFile(CONFIG.name, CONFIG.data, lfs=False).resolve(COMMIT, repo="acme/old-name")
    hub.mirror.routes[hub.mirror_route(old)] = redirect(307, hub.mirror_route(CONFIG.resolve()))
    p = proxy(hub.rules())

    got = hf_download(p, pki, tmp_path, hub.origin.url, [CONFIG.name], repo="acme/old-name")

    assert got == [CONFIG.data]
    assert ("HEAD", hub.mirror_route(CONFIG.resolve())) in resolve_hits(hub.mirror)
    assert hub.origin.count(old) == 0 and hub.origin.count(hub.mirror_route(CONFIG.resolve())) == 0


def test_mirror_redirects_and_links_name_the_origin(fake, proxy, client):
    hub = Hub(fake)
    # By branch: the mirror sends the client on to the commit, relatively, below its prefix.
    hub.mirror.routes[hub.mirror_route(WEIGHTS.resolve("main"))] = redirect(
        302, hub.mirror_route(WEIGHTS.resolve()),
        {"X-Repo-Commit": COMMIT, "Link": f'<{hub.mirror.url}{MIRROR_PREFIX}api/models/{REPO}/xet-read-token/'
                                          f'{COMMIT}>; rel="xet-auth", <https://cas-server.xethub.hf.co/r>; '
                                          f'rel="xet-reconstruction-info"'})
    p = proxy(hub.rules())
    c = client(p)

    by_branch = c.head(hub.origin.url + WEIGHTS.resolve("main").lstrip("/"))
    by_commit = c.head(hub.origin.url + WEIGHTS.resolve().lstrip("/"))

    assert by_branch.status_code == 302 and header(by_branch)["upstream"] == f"mirror:{hub.mirror.url}{MIRROR_PREFIX}"
    assert by_branch.headers["location"] == hub.origin.url + WEIGHTS.resolve().lstrip("/")
    assert by_branch.headers["link"] == (f'<{hub.origin.url}api/models/{REPO}/xet-read-token/{COMMIT}>; '
                                         f'rel="xet-auth", <https://cas-server.xethub.hf.co/r>; '
                                         f'rel="xet-reconstruction-info"')
    # The Hub's CDN stays as the mirror named it; the metadata is the mirror's 302's own.
    assert by_commit.status_code == 302 and by_commit.headers["location"] == hub.cdn_url(WEIGHTS, "mirror")
    assert by_commit.headers["x-linked-etag"] == f'"{WEIGHTS.sha256}"'
    assert by_commit.headers["link"].startswith(f"<{hub.origin.url}api/models/{REPO}/")
    assert hub.cdn.count() == 0  # nothing followed inside the proxy


def test_a_mirror_redirecting_to_the_origin_is_passed_over_not_looped(fake, proxy, client):
    hub = Hub(fake)
    hub.mirror.routes[hub.mirror_route(CONFIG.resolve())] = redirect(
        308, hub.origin.url + CONFIG.resolve().lstrip("/"))
    p = proxy(hub.rules())

    r = client(p).head(hub.origin.url + CONFIG.resolve().lstrip("/"))

    assert r.status_code == 200 and r.headers["etag"] == f'"{CONFIG.blob_id}"'
    assert header(r)["upstream"] == f"origin:{hub.origin.url}"
    assert "rewrite_error" in r.headers["X-Mirrorgate"]


def test_hf_hub_download_with_the_mirror_down(fake, proxy, pki, tmp_path):
    hub = Hub(fake)
    p = proxy(hub.rules(f"https://127.0.0.3:{closed_port('127.0.0.3')}/"))

    got = hf_download(p, pki, tmp_path, hub.origin.url, [CONFIG.name, WEIGHTS.name])

    assert got == [CONFIG.data, WEIGHTS.data]
    assert ("GET", CONFIG.resolve()) in resolve_hits(hub.origin)
    assert ("HEAD", WEIGHTS.resolve()) in resolve_hits(hub.origin)
    assert [h.path for h in hub.cdn.hits] == [f"{WEIGHTS.cdn_path}?X-Amz-Signature=origin"]


def test_hf_hub_download_when_the_mirror_corrupts_a_file(fake, proxy, pki, tmp_path, client):
    hub = Hub(fake)
    hub.mirror_serves(CONFIG, body=CONFIG.data.replace(b"tiny", b"evil"))
    p = proxy(hub.rules())

    got = hf_download(p, pki, tmp_path, hub.origin.url, [CONFIG.name])

    assert got == [CONFIG.data]
    assert ("GET", hub.mirror_route(CONFIG.resolve())) in resolve_hits(hub.mirror)
    assert ("GET", CONFIG.resolve()) in resolve_hits(hub.origin)  # the good bytes came from the origin
    assert "integrity" in p.text()
    again = client(p).get(hub.origin.url + CONFIG.resolve().lstrip("/"))
    assert again.content == CONFIG.data and header(again)["cache"] == "HIT"


def test_a_token_never_reaches_the_mirror(fake, proxy, pki, tmp_path, client):
    hub = Hub(fake)
    p = proxy(hub.rules())
    token = "hf_test_not_a_real_token_0123456789"

    got = hf_download(p, pki, tmp_path, hub.origin.url, [CONFIG.name, WEIGHTS.name], token=token)

    assert got == [CONFIG.data, WEIGHTS.data]
    assert hub.mirror.count() == 0
    assert resolve_hits(hub.origin) and all(h.headers.get("Authorization") == f"Bearer {token}"
                                            for h in hub.origin.hits)
    assert [h.headers.get("Authorization") for h in hub.cdn.hits] == [None]  # never sent off the Hub
    r = client(p).get(hub.origin.url + CONFIG.resolve().lstrip("/"), headers={"Authorization": f"Bearer {token}"})
    assert r.content == CONFIG.data and header(r)["route"] == "origin-only (credentials)"
    assert hub.mirror.count() == 0


def test_an_lfs_file_fetched_whole_is_checked_against_the_origin_sha256_and_kept(fake, proxy, client):
    """Clients that GET a resolve URL and follow redirects (curl -L, older libraries): the
    mirror's redirect is followed inside the proxy, the bytes checked against the
    origin's X-Linked-Etag, and kept."""
    hub = Hub(fake)
    mirror_cdn = fake("mirror-cdn", "127.0.0.6")
    mirror_cdn.routes[WEIGHTS.cdn_path] = cdn_answer(WEIGHTS.data)
    hub.mirror_serves(WEIGHTS, location=f"{mirror_cdn.url.rstrip('/')}{WEIGHTS.cdn_path}")
    p = proxy(hub.rules())
    c = client(p)

    first = c.get(hub.origin.url + WEIGHTS.resolve().lstrip("/"))
    second = c.get(hub.origin.url + WEIGHTS.resolve().lstrip("/"))

    assert first.status_code == 200 and first.content == WEIGHTS.data
    assert header(first)["upstream"] == f"mirror:{hub.mirror.url}{MIRROR_PREFIX}"
    assert second.content == WEIGHTS.data and header(second)["cache"] == "HIT"
    assert mirror_cdn.count(WEIGHTS.cdn_path) == 1 and hub.cdn.count() == 0
    assert resolve_hits(hub.origin) == [("HEAD", WEIGHTS.resolve())]  # the proxy's check only


def test_a_file_kept_whole_serves_hf_hub_download_from_the_cache(fake, proxy, pki, tmp_path, client):
    """Once the proxy holds an LFS file, a HEAD for it is answered from the cache: with
    the origin's metadata (commit, sha256, size), so huggingface_hub then GETs the
    resolve URL itself, also from the cache."""
    hub = Hub(fake)
    p = proxy(hub.rules())
    kept = client(p).get(hub.origin.url + WEIGHTS.resolve().lstrip("/"))
    assert kept.content == WEIGHTS.data and hub.cdn.count() == 1
    asked = len(hub.mirror.hits), len(hub.origin.hits)

    got = hf_download(p, pki, tmp_path, hub.origin.url, [WEIGHTS.name])

    assert got == [WEIGHTS.data]
    assert (len(hub.mirror.hits), len(hub.origin.hits), hub.cdn.count()) == (*asked, 1)
    blob = tmp_path / "hf-home" / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs" / WEIGHTS.sha256
    assert blob.read_bytes() == WEIGHTS.data  # named by the sha256, as a download from the Hub is


def test_corrupted_lfs_bytes_from_a_mirror_never_reach_the_client_or_the_cache(fake, proxy, client):
    hub = Hub(fake)
    mirror_cdn = fake("mirror-cdn", "127.0.0.6")
    mirror_cdn.routes[WEIGHTS.cdn_path] = cdn_answer(WEIGHTS.data[:-4] + b"EVIL")
    hub.mirror_serves(WEIGHTS, location=f"{mirror_cdn.url.rstrip('/')}{WEIGHTS.cdn_path}")
    p = proxy(hub.rules())
    c = client(p)

    first = c.get(hub.origin.url + WEIGHTS.resolve().lstrip("/"), follow_redirects=True)
    second = c.get(hub.origin.url + WEIGHTS.resolve().lstrip("/"), follow_redirects=True)

    # The origin's own answer is a redirect to its CDN, which the client follows itself.
    assert first.content == WEIGHTS.data and second.content == WEIGHTS.data
    assert [h.path for h in hub.cdn.hits] == [f"{WEIGHTS.cdn_path}?X-Amz-Signature=origin"] * 2
    assert mirror_cdn.count(WEIGHTS.cdn_path) == 2  # asked again: the bad bytes were not kept
    assert "integrity" in p.text()
