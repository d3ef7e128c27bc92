"""Maven Central through the proxy with the real Maven (`mvn -C`, strict checksums) as
the judge: jars and poms come from the mirror, checked against the origin's checksum
files; the checksum files Maven asks for, and maven-metadata.xml, come from the origin.

Maven needs plugins from Central to run any goal such as `dependency:get`, and there is
no Central here; a fresh CI machine has none in ~/.m2 either. So Maven is made to
download through the proxy the one way that needs no plugin: a core extension named in
`.mvn/extensions.xml`, which Maven resolves (its pom, its jar, its dependencies' poms
and jars, each with its `.sha1`) before building anything, in a pom-packaging project
whose `validate` phase binds no plugin at all (a run offline with an empty local
repository succeeds).
"""

from __future__ import annotations

import pytest

from tests.e2e.test_fallback import header
from tests.support.fakes import closed_port
from tests.support.maven import (
    Release,
    checksum,
    extension_project,
    maven_available,
    metadata,
    metadata_path,
    release,
    run_maven,
    serve,
    truststore,
)
from tests.support.pki import loopback_hostname

HOST = loopback_hostname() or ("localhost", "127.0.0.1")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not maven_available(),
                                                  reason="mvn and keytool are not on PATH (.ci/run installs maven)")]

ORIGIN_ROOT, MIRROR_ROOT = "/maven2", "/repository/central"
LIB = release("com.example", "hello-lib", "1.0")
UTIL = release("com.example", "hello-util", "1.0")
EXT = release("com.example", "hello-ext", "1.0",
              ((LIB.group, LIB.artifact_id, LIB.version), (UTIL.group, UTIL.artifact_id, UTIL.version)))
RELEASES = (EXT, LIB, UTIL)
FILES = {path: data for r in RELEASES for path, data in r.files.items()}
# Checksum files: what Maven asks for (.sha1) and what the proxy reads its expectation from.
SIDECARS = (".sha1", ".sha256")


class Central:
    """The origin (repo1.maven.org) and one mirror (an Aliyun-like Nexus), both on this
    machine's own name: Java may send nothing for localhost through a proxy."""

    def __init__(self, fake, releases: tuple[Release, ...] = RELEASES):
        self.origin = fake("repo1.maven.org", HOST[1], name_in_url=HOST[0])
        self.mirror = fake("maven.aliyun.com", HOST[1], name_in_url=HOST[0])
        files = {path: data for r in releases for path, data in r.files.items()}
        serve(self.origin, ORIGIN_ROOT, files)
        # Nexus mirrors keep .sha1 and .md5 beside each file; the proxy must never need them.
        serve(self.mirror, MIRROR_ROOT, files, sidecars=(".sha1", ".md5"))

    @property
    def repository(self) -> str:
        return f"{self.origin.url}maven2/"

    def rules(self, mirror_url: str | None = None, ttl: str = "10m", origin_url: str | None = None) -> str:
        mirror = mirror_url or f"{self.mirror.url}repository/central/"
        # As in rules/default.yaml: every file of a release's folder is an artifact.
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: maven-central
    protocol: maven
    match: {origin_url or self.repository}
    mirrors:
      test: [{mirror}]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 429, 404, 410]
    cache:
      metadata: ["/**/maven-metadata.xml", "/**/maven-metadata.xml.*"]
      artifacts: ['re:/.+/([^/]+)/[^/]+/\\1-[^/]+']
      ttl: {ttl}
"""


def mvn(p, pki, tmp_path, central: Central, extension: Release = EXT):
    project = extension_project(tmp_path / "app", extension)
    trust = truststore(tmp_path / "truststore.p12", p.ca, pki.ca)
    run = run_maven(project, tmp_path, central.repository, p.url, p.port, trust)
    assert run.returncode == 0, run.output[-6000:] + "\n--- proxy ---\n" + p.text()[-4000:]
    # Maven saw only the origin: its log and its local repository never name the mirror.
    assert f"Downloaded from central-origin: {central.repository}" in run.output
    mirror = f":{central.mirror.port}/".encode()
    assert mirror not in run.output.encode()
    assert not [f for f in run.local_repo.rglob("*") if f.is_file() and mirror in f.read_bytes()]
    return run


def origin_files_served(central: Central) -> set[str]:
    """The paths (below the root) the origin answered, checksum files left out."""
    return {h.path[len(ORIGIN_ROOT):] for h in central.origin.hits if not h.path.endswith(SIDECARS)}


def check_local_repository(run, releases: tuple[Release, ...] = RELEASES) -> None:
    for r in releases:
        for path, data in r.files.items():
            assert run.file(path) == data, path
            assert run.file(path + ".sha1") == checksum(data, ".sha1"), path


def test_maven_resolves_through_the_mirror(fake, proxy, pki, tmp_path, client):
    central = Central(fake)
    p = proxy(central.rules())

    check_local_repository(mvn(p, pki, tmp_path, central))

    # Jars and poms from the mirror, once each; none of its checksum files.
    assert sorted(h.path for h in central.mirror.hits) == sorted(MIRROR_ROOT + path for path in FILES)
    # The origin served checksum files only: the proxy's expectation (.sha256 and .sha1,
    # asked together) and the .sha1 Maven checks each download against (the second .sha1
    # trip would go if the relay kept what a check fetched from the origin).
    assert origin_files_served(central) == set()
    for path in FILES:
        assert central.origin.count(ORIGIN_ROOT + path + ".sha256") == 1, path
        # Once for the check; Maven's own request is then a hit on the copy the check kept.
        assert central.origin.count(ORIGIN_ROOT + path + ".sha1") == 1, path

    c = client(p)
    for path, data in FILES.items():
        r = c.get(central.repository + path.lstrip("/"))
        assert r.content == data and header(r)["cache"] == "HIT"
    r = c.get(central.repository + LIB.path("jar").lstrip("/") + ".sha1")
    assert r.content == checksum(LIB.jar, ".sha1") and header(r)["cache"] == "HIT"
    assert len(central.mirror.hits) == len(FILES) and len(origin_files_served(central)) == 0


def test_maven_with_a_mirror_whose_checksum_files_disagree(fake, proxy, pki, tmp_path):
    """A mirror that synced its checksum files badly: strict Maven would refuse every
    artifact if it saw them; it never does."""
    central = Central(fake)
    for path in FILES:
        central.mirror.serve(MIRROR_ROOT + path + ".sha1", b"0" * 40)
    p = proxy(central.rules())

    check_local_repository(mvn(p, pki, tmp_path, central))

    assert not any(h.path.endswith(SIDECARS) for h in central.mirror.hits)
    assert origin_files_served(central) == set()


def test_strict_maven_fails_on_a_checksum_file_that_disagrees(fake, proxy, pki, tmp_path):
    """The harness can fail: with the origin's own .sha1 wrong for one jar (its .sha256,
    which the proxy checks against, is right), Maven -C refuses that jar."""
    central = Central(fake)
    central.origin.serve(ORIGIN_ROOT + LIB.path("jar") + ".sha1", b"0" * 40)
    p = proxy(central.rules())

    project = extension_project(tmp_path / "app", EXT)
    trust = truststore(tmp_path / "truststore.p12", p.ca, pki.ca)
    run = run_maven(project, tmp_path, central.repository, p.url, p.port, trust)

    assert run.returncode != 0
    assert "Checksum validation failed" in run.output and "hello-lib-1.0.jar" in run.output


def test_maven_succeeds_with_the_mirror_down(fake, proxy, pki, tmp_path, client):
    central = Central(fake)
    p = proxy(central.rules(f"https://{HOST[0]}:{closed_port(HOST[1])}/repository/central/"))

    check_local_repository(mvn(p, pki, tmp_path, central))

    assert origin_files_served(central) == set(FILES)
    r = client(p).get(central.repository + LIB.path("jar").lstrip("/"))
    assert r.content == LIB.jar and header(r)["cache"] == "HIT"


def test_maven_succeeds_when_the_mirror_serves_a_corrupted_jar(fake, proxy, pki, tmp_path, client):
    central = Central(fake)
    bad = LIB.path("jar")
    central.mirror.serve(MIRROR_ROOT + bad, bytes(b ^ 0x5A for b in LIB.jar))
    p = proxy(central.rules())

    check_local_repository(mvn(p, pki, tmp_path, central))

    assert origin_files_served(central) == {bad}
    assert central.mirror.count(MIRROR_ROOT + bad) == 1
    assert "integrity" in p.text()
    r = client(p).get(central.repository + bad.lstrip("/"))
    assert r.content == LIB.jar and header(r)["cache"] == "HIT"
    assert central.origin.count(ORIGIN_ROOT + bad) == 1


def test_maven_gets_a_release_the_mirror_lacks_and_a_range_from_the_origins_metadata(fake, proxy, pki, tmp_path,
                                                                                      client):
    """The mirror lags: its maven-metadata.xml does not list hello-util 1.1 and it 404s
    1.1's files. Maven resolves `[1.0,2.0)` against the origin's metadata (checking it
    strictly against the origin's own .sha1) and gets 1.1 from the origin; a mirror 404
    never reaches Maven, which would remember it in the local repository."""
    new = release("com.example", "hello-util", "1.1")
    ext = release("com.example", "hello-ext", "2.0", (("com.example", "hello-util", "[1.0,2.0)"),))
    central = Central(fake, (ext, UTIL, new))
    meta = metadata_path("com.example", "hello-util")
    for f, root, versions in ((central.origin, ORIGIN_ROOT, ["1.0", "1.1"]), (central.mirror, MIRROR_ROOT, ["1.0"])):
        serve(f, root, {meta: metadata("com.example", "hello-util", versions)})
    for path in new.files:
        del central.mirror.routes[MIRROR_ROOT + path]
    p = proxy(central.rules())

    run = mvn(p, pki, tmp_path, central, ext)

    check_local_repository(run, (ext, new))
    assert not list(run.local_repo.rglob("*.lastUpdated"))  # Maven's record of a failed download
    assert origin_files_served(central) == {meta, *new.files}
    assert all(central.mirror.count(MIRROR_ROOT + path) == 1 for path in new.files)
    assert central.origin.count(ORIGIN_ROOT + meta + ".sha1") == 1
    assert central.mirror.count(MIRROR_ROOT + meta) == 0
    c = client(p)
    for path, data in new.files.items():
        r = c.get(central.repository + path.lstrip("/"))
        assert r.content == data and header(r)["cache"] == "HIT"


def test_maven_metadata_is_revalidated_not_kept(fake, proxy, client):
    """maven-metadata.xml changes with every release: it is cached as metadata, asked of
    the origin again once the ttl (here 1ms) is over, never kept as an artifact; jars are
    kept. The lagging mirror's copy is never asked for."""
    central = Central(fake)
    meta = metadata_path("com.example", "hello-lib")
    body = metadata("com.example", "hello-lib", ["1.0"])
    central.origin.with_etag(ORIGIN_ROOT + meta, body, '"m1"')
    central.mirror.serve(MIRROR_ROOT + meta, metadata("com.example", "hello-lib", ["0.9"]))
    p = proxy(central.rules(ttl="1ms"))
    c = client(p)

    first, second = (c.get(central.repository + meta.lstrip("/")) for _ in range(2))

    assert first.content == second.content == body
    assert header(first)["cache"] == "MISS" and header(second)["cache"] == "REVALIDATED"
    assert header(first)["upstream"].startswith("origin:")
    assert central.origin.hits[-1].headers.get("If-None-Match") == '"m1"'
    assert central.mirror.count(MIRROR_ROOT + meta) == 0
    jar = [c.get(central.repository + LIB.path("jar").lstrip("/")) for _ in range(2)]
    assert [header(r)["cache"] for r in jar] == ["MISS", "HIT"]


def test_with_the_origin_down_a_mirrors_jar_is_served_unchecked_and_never_kept(fake, proxy, client):
    """Nothing to check against: the client gets the mirror's bytes, the cache does not."""
    central = Central(fake)
    down = f"https://{HOST[0]}:{closed_port(HOST[1])}/maven2/"
    p = proxy(central.rules(origin_url=down))
    c = client(p)

    first, second = (c.get(down + LIB.path("jar").lstrip("/")) for _ in range(2))

    assert first.content == second.content == LIB.jar
    assert [header(r)["cache"] for r in (first, second)] == ["MISS", "MISS"]
    assert central.mirror.count(MIRROR_ROOT + LIB.path("jar")) == 2


def test_with_the_origin_down_checksum_files_and_metadata_come_from_a_mirror_and_are_not_kept(fake, proxy, client):
    """Asked of the origin first, but a mirror stands in while the origin is unreachable."""
    central = Central(fake)
    meta, listing = metadata_path(LIB.group, LIB.artifact_id), metadata(LIB.group, LIB.artifact_id, ["1.0"])
    serve(central.mirror, MIRROR_ROOT, {meta: listing})
    down = f"https://{HOST[0]}:{closed_port(HOST[1])}/maven2/"
    p = proxy(central.rules(origin_url=down))
    c = client(p)

    expected = {LIB.path("jar") + ".sha1": checksum(LIB.jar, ".sha1"), meta: listing,
                meta + ".sha1": checksum(listing, ".sha1")}
    for path, body in expected.items():
        first, second = (c.get(down + path.lstrip("/")) for _ in range(2))
        assert first.status_code == second.status_code == 200, path
        assert first.content == second.content == body
        assert header(first)["upstream"].startswith("mirror:") and "origin:" in header(first)["fallback"]
        # Served while the origin is away, but a mirror's word on these is never kept.
        assert [header(r)["cache"] for r in (first, second)] == ["MISS", "MISS"]
        assert central.mirror.count(MIRROR_ROOT + path) == 2
