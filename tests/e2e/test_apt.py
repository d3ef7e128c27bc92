"""Debian's apt through the proxy with the real apt-get as the judge: a plain-http origin
(apt's default sources), an https mirror, and a suite clearsigned with a throwaway key.
InRelease comes from the origin; Packages (by hash) and .deb files from the mirror, each
checked against the chain InRelease -> Packages -> .deb before apt or the cache sees it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.e2e.test_fallback import header
from tests.support.apt import AptRoot, ArchiveKey, build_deb, have_apt, serve, suite
from tests.support.fakes import WAIT, closed_port
from tests.support.pki import loopback_hostname

HOST = loopback_hostname() or ("localhost", "127.0.0.1")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not have_apt(), reason="apt-get, dpkg-deb or gpg is not on PATH")]

ORIGIN_ROOT = "/debian/"
MIRROR_ROOT = "/mirror/debian/"  # a layout of its own, so that a path sent unmapped shows


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory):
    """Two snapshots of one archive, signed by its key: `old` has one package, `new`
    (what the origin serves) adds a second whose name and version apt percent-encodes."""
    work = tmp_path_factory.mktemp("apt-archive")
    hello = build_deb(work, "mg-hello", "1.0", "amd64")
    tools = build_deb(work, "mg-plus+tools", "1.0~rc1", "all")
    key = ArchiveKey(work / "gnupg")
    try:
        yield key, suite([hello], key), suite([hello, tools], key)
    finally:
        key.close()


class Archive:
    def __init__(self, fake, snapshots, tmp_path: Path):
        self.key, self.old, self.new = snapshots
        # apt's default sources are plain http: the origin is too.
        self.origin = fake("deb.debian.org", HOST[1], secure=False, name_in_url=HOST[0])
        self.mirror = fake("mirror", HOST[1], name_in_url=HOST[0])
        serve(self.origin, ORIGIN_ROOT, self.new)
        self.url = f"{self.origin.url}{ORIGIN_ROOT.lstrip('/')}"
        self.tmp_path = tmp_path
        self.log = tmp_path / "access.log"

    def start(self, proxy, mirror_url: str | None = None, protocol: bool = True):
        m = mirror_url or f"{self.mirror.url}{MIRROR_ROOT.lstrip('/')}"
        return proxy(f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: debian
    match: {self.url}
    {"protocol: apt" if protocol else ""}
    mirrors:
      test: [{m}]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 429, 403, 404, 410]
    cache:
      metadata: ['re:/dists/(?!.*/by-hash/).+']
      artifacts: ["/pool/**", "/dists/**/by-hash/**"]
      ttl: 5m
""", "--set", f"access_log={self.log}")

    def apt(self, p, *options: str) -> AptRoot:
        return AptRoot(self.tmp_path / "apt", p.url, self.url, self.key.keyring, *options)

    def record(self, path: str) -> dict:
        """The access-log record of the proxy's first answer for `path` (below the archive
        root). mitmproxy writes it just after the client had the response."""
        url = self.url + apt_quoted(path)
        deadline = time.monotonic() + WAIT
        while True:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            found = [r for r in map(json.loads, lines) if r["url"] == url]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no access-log record for {url} in:\n" + "\n".join(lines)
            time.sleep(0.05)


def apt_quoted(path: str) -> str:
    """A path as apt sends it: '+' and '~' percent-encoded (so the cache key is apt's)."""
    return path.replace("+", "%2b").replace("~", "%7e")


def asked(fake, root: str) -> list[str]:
    """Paths (below the archive root, escapes undone) a fake was asked for, in order."""
    return [unquote(h.path)[len(root):] for h in fake.hits]


def run_ok(a: AptRoot, p, *args: str) -> None:
    out = a.run(*args)
    assert out.returncode == 0 and "Hash Sum mismatch" not in out.stdout + out.stderr and \
        "\nW:" not in "\n" + out.stderr, \
        f"apt-get {' '.join(args)}:\n{out.stdout}{out.stderr}\n--- proxy ---\n{p.text()[-4000:]}"


def update_and_download(archive: Archive, p, *options: str) -> AptRoot:
    a = archive.apt(p, *options)
    run_ok(a, p, "update")
    run_ok(a, p, "download", *(d.name for d in archive.new.debs))
    for d in archive.new.debs:
        assert (a.downloads / d.filename.rsplit("/", 1)[-1]).read_bytes() == d.data
    return a


def cached(client, archive: Archive, path: str, body: bytes) -> None:
    """The proxy now answers `path` (as apt asks for it) from its cache, with `body`."""
    r = client.get(archive.url + apt_quoted(path))
    assert r.status_code == 200 and r.content == body
    assert header(r)["cache"] == "HIT", r.headers["X-Mirrorgate"]


def fell_back(archive: Archive, path: str, cause: str) -> None:
    """The proxy's answer for `path` came from the origin, after the mirror's `cause`."""
    record = archive.record(path)
    assert record["upstream"] == f"origin:{archive.url}", record
    assert [f["cause"] for f in record["fallbacks"]] == [cause], record


def test_apt_gets_indices_and_packages_from_the_mirror(fake, proxy, client, tmp_path, snapshots):
    archive = Archive(fake, snapshots, tmp_path)
    serve(archive.mirror, MIRROR_ROOT, archive.new)
    p = archive.start(proxy)

    a = update_and_download(archive, p)

    # The signed pointer from the origin, and nothing else.
    assert asked(archive.origin, ORIGIN_ROOT) == ["dists/mg/InRelease"]
    assert archive.record("dists/mg/InRelease")["upstream"] == f"origin:{archive.url}"
    mirror = asked(archive.mirror, MIRROR_ROOT)
    indices = [path for path in mirror if "/by-hash/SHA256/" in path]
    assert len(indices) == 1 and indices[0] in archive.new.files
    assert sorted(path for path in mirror if path not in indices) == sorted(d.filename for d in archive.new.debs)
    c = client(p)
    for path in indices + [d.filename for d in archive.new.debs]:
        assert archive.record(path)["upstream"].startswith("mirror:")
        cached(c, archive, path, archive.new.files[path])
    # Within the rule's ttl the next update is answered from the cache alone.
    run_ok(a, p, "update")
    assert asked(archive.origin, ORIGIN_ROOT) == ["dists/mg/InRelease"]
    assert len(archive.mirror.hits) == len(mirror)


def test_apt_succeeds_with_the_mirror_down(fake, proxy, client, tmp_path, snapshots):
    archive = Archive(fake, snapshots, tmp_path)
    p = archive.start(proxy, f"https://{HOST[0]}:{closed_port(HOST[1])}/debian/")

    update_and_download(archive, p)

    served = asked(archive.origin, ORIGIN_ROOT)
    assert served[0] == "dists/mg/InRelease" and "/by-hash/SHA256/" in served[1]
    assert served[2:] == [d.filename for d in archive.new.debs]
    fell_back(archive, served[1], "connect_error")
    for d in archive.new.debs:
        cached(client(p), archive, d.filename, d.data)


def test_apt_succeeds_when_the_mirror_serves_a_corrupted_package(fake, proxy, client, tmp_path, snapshots):
    archive = Archive(fake, snapshots, tmp_path)
    serve(archive.mirror, MIRROR_ROOT, archive.new)
    bad = archive.new.debs[1]
    archive.mirror.serve(MIRROR_ROOT + bad.filename, bytes(b ^ 0x5A for b in bad.data))
    p = archive.start(proxy)

    update_and_download(archive, p)

    assert asked(archive.origin, ORIGIN_ROOT) == ["dists/mg/InRelease", bad.filename]
    assert asked(archive.mirror, MIRROR_ROOT).count(bad.filename) == 1
    fell_back(archive, bad.filename, "integrity")
    cached(client(p), archive, bad.filename, bad.data)


def mid_sync(archive: Archive, by_hash: bool) -> None:
    """A mirror caught mid-sync: the new InRelease and packages, but the old Packages
    where the new InRelease names the new ones (by name, or even under the new hash)."""
    serve(archive.mirror, MIRROR_ROOT, archive.new)
    for name in ("Packages", "Packages.gz", "Packages.xz"):
        path = archive.new.by_hash(name) if by_hash else archive.new.index(name)
        archive.mirror.serve(MIRROR_ROOT + path, archive.old.files[archive.old.index(name)])


# apt uses by-hash whenever the Release offers it; by name only without (or told so).
INDEX_BY = pytest.mark.parametrize("by_hash", [True, False], ids=["by-hash", "by-name"])


def no_by_hash(by_hash: bool) -> list[str]:
    return [] if by_hash else ["Acquire::By-Hash=no"]


@INDEX_BY
def test_without_the_protocol_a_mirror_mid_sync_breaks_apt(fake, proxy, tmp_path, snapshots, by_hash):
    """What the checks below prevent."""
    archive = Archive(fake, snapshots, tmp_path)
    mid_sync(archive, by_hash)
    p = archive.start(proxy, protocol=False)

    out = archive.apt(p, *no_by_hash(by_hash)).run("update")

    assert out.returncode != 0
    assert "Hash Sum mismatch" in out.stderr or "File has unexpected size" in out.stderr


@INDEX_BY
def test_apt_never_pairs_the_origins_release_with_a_mirrors_other_index(fake, proxy, client, tmp_path, snapshots,
                                                                          by_hash):
    archive = Archive(fake, snapshots, tmp_path)
    mid_sync(archive, by_hash)
    p = archive.start(proxy)

    update_and_download(archive, p, *no_by_hash(by_hash))

    index = next(path for path in asked(archive.mirror, MIRROR_ROOT) if path.startswith("dists/"))
    # By name, the proxy reads the origin's InRelease itself for the index's SHA256.
    expected = ["dists/mg/InRelease", index] if by_hash else ["dists/mg/InRelease", "dists/mg/InRelease", index]
    assert asked(archive.origin, ORIGIN_ROOT) == expected
    fell_back(archive, index, "integrity")
    # The packages still come from the mirror, checked against the origin's index.
    for d in archive.new.debs:
        assert asked(archive.mirror, MIRROR_ROOT).count(d.filename) == 1
        assert archive.record(d.filename)["upstream"].startswith("mirror:")
        cached(client(p), archive, d.filename, d.data)
    cached(client(p), archive, index, archive.new.files[index])


def test_apt_succeeds_when_the_mirror_lags(fake, proxy, client, tmp_path, snapshots):
    """The mirror has the old snapshot: no by-hash file for the new index, no new package."""
    archive = Archive(fake, snapshots, tmp_path)
    serve(archive.mirror, MIRROR_ROOT, archive.old)
    p = archive.start(proxy)

    update_and_download(archive, p)

    old, new = archive.new.debs
    mirror = asked(archive.mirror, MIRROR_ROOT)
    index = next(path for path in mirror if "/by-hash/" in path)
    assert index in archive.new.files and index not in archive.old.files
    assert asked(archive.origin, ORIGIN_ROOT) == ["dists/mg/InRelease", index, new.filename]
    assert mirror.count(old.filename) == 1 and mirror.count(new.filename) == 1
    fell_back(archive, index, "404")
    fell_back(archive, new.filename, "404")
    cached(client(p), archive, old.filename, old.data)
    cached(client(p), archive, new.filename, new.data)


def test_a_package_no_checked_index_named_is_served_but_not_kept(fake, proxy, client, tmp_path, snapshots):
    archive = Archive(fake, snapshots, tmp_path)
    serve(archive.mirror, MIRROR_ROOT, archive.new)
    p = archive.start(proxy)
    deb = archive.new.debs[0]
    c = client(p)

    for _ in range(2):
        r = c.get(archive.url + deb.filename)
        assert r.status_code == 200 and r.content == deb.data
        assert header(r)["upstream"].startswith("mirror:") and header(r)["cache"] == "MISS"

    assert archive.origin.count() == 0 and archive.mirror.count() == 2
