"""Maven, pure: what a repository path is, what a checksum file holds, which checksum an
artifact is held to, and which files the origin is asked for first."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mirrorgate.cache.policy import classify
from mirrorgate.protocols import Digest, registry
from mirrorgate.protocols.maven import Maven, kind, parse_checksum, strongest
from mirrorgate.rules import parse_rules

SHA1 = hashlib.sha1(b"jar").hexdigest()
SHA256 = hashlib.sha256(b"jar").hexdigest()
JAR = "/com/google/guava/guava/33.0.0-jre/guava-33.0.0-jre.jar"
URL = "https://repo1.maven.org/maven2" + JAR


@pytest.mark.parametrize("path, expected", [
    (JAR, "artifact"),
    ("/com/google/guava/guava/33.0.0-jre/guava-33.0.0-jre.pom", "artifact"),
    ("/com/google/guava/guava/33.0.0-jre/guava-33.0.0-jre.module", "artifact"),
    ("/com/google/guava/guava/33.0.0-jre/guava-33.0.0-jre-sources.jar", "artifact"),
    ("/junit/junit/4.13.2/junit-4.13.2.jar", "artifact"),  # a one-folder group
    ("/com/google/protobuf/protoc/3.25.1/protoc-3.25.1-linux-x86_64.exe", "artifact"),
    ("/org/example/dist/1.0/dist-1.0-bin.tar.gz", "artifact"),
    ("/org/example/app/1.0/app-1.0-cyclonedx.json", "artifact"),
    ("/org/example/lib/1.0-SNAPSHOT/lib-1.0-20260101.000000-1.jar", "artifact"),
    (JAR + ".sha1", "checksum"),
    (JAR + ".sha256", "checksum"),
    (JAR + ".sha512", "checksum"),
    (JAR + ".md5", "checksum"),
    (JAR + ".asc.sha1", "checksum"),
    ("/com/google/guava/guava/maven-metadata.xml.sha1", "checksum"),
    (JAR + ".asc", "signature"),
    ("/com/google/guava/guava/maven-metadata.xml", "metadata"),
    ("/org/apache/maven/plugins/maven-metadata.xml", "metadata"),  # plugin prefixes
    ("/org/example/lib/1.0-SNAPSHOT/maven-metadata.xml", "metadata"),
    # Not a release's own file: named after another artifact, or outside the layout.
    ("/com/google/guava/guava/33.0.0-jre/failureaccess-1.0.jar", "other"),
    ("/com/google/guava/guava/33.0.0-jre/guava-", "other"),
    ("/guava/33.0.0-jre/guava-33.0.0-jre.jar", "other"),
    ("/archetype-catalog.xml", "other"),
    ("/.meta/prefixes.txt", "other"),
    ("/com/google/guava/guava/33.0.0-jre/", "other"),
    ("/com//guava/33.0.0-jre/guava-33.0.0-jre.jar", "other"),
    ("/", "other"),
    ("/.sha1", "other"),
])
def test_kind_of_a_repository_path(path, expected):
    assert kind(path) == expected


@pytest.mark.parametrize("body", [
    SHA1.encode(),
    SHA1.encode() + b"\n",
    SHA1.upper().encode(),
    f"{SHA1}  guava-33.0.0-jre.jar\n".encode(),  # sha1sum
    f"SHA1(guava-33.0.0-jre.jar)= {SHA1}\n".encode(),  # openssl
    f"SHA1 (guava-33.0.0-jre.jar) = {SHA1}\n".encode(),  # BSD
    f"\n  {SHA1} /home/projects/maven/repository-staging/to-ibiblio/guava.jar\r\n".encode(),
])
def test_checksum_files_as_found_in_the_wild(body):
    assert parse_checksum(body, ".sha1") == Digest("sha1", bytes.fromhex(SHA1))


@pytest.mark.parametrize("body, suffix", [
    (b"", ".sha1"),
    (b"\n\n", ".sha1"),
    (SHA1[:-1].encode(), ".sha1"),  # one digit short
    (SHA1.encode() + b"0", ".sha1"),
    (SHA256.encode(), ".sha1"),  # another algorithm's length
    (SHA1.encode(), ".sha256"),
    (("g" * 40).encode(), ".sha1"),
    (b"<html><body>Not Found</body></html>", ".sha1"),
    ("é".encode() + SHA1.encode(), ".sha1"),
    (f"{'0' * 10}\n{SHA1}\n".encode(), ".sha1"),  # the digest must be on the first line
])
def test_checksum_files_without_a_digest_of_the_right_length(body, suffix):
    assert parse_checksum(body, suffix) is None


def test_sha256_is_preferred_and_sha1_stands_in():
    sha256, sha1 = Digest("sha256", bytes.fromhex(SHA256)), Digest("sha1", bytes.fromhex(SHA1))
    assert strongest({".sha256": SHA256.encode(), ".sha1": SHA1.encode()}) == sha256
    assert strongest({".sha256": None, ".sha1": SHA1.encode()}) == sha1
    assert strongest({".sha256": b"not a digest", ".sha1": SHA1.encode()}) == sha1
    assert strongest({".sha256": None, ".sha1": None}) is None
    assert strongest({".md5": hashlib.md5(b"jar").hexdigest().encode()}) is None  # MD5 is never trusted


def test_registered_as_maven():
    assert isinstance(registry()["maven"], Maven)


@pytest.mark.parametrize("path, checked, origin_first", [
    (JAR, True, False),
    (JAR + ".sha1", True, True),  # held to "kept only from the origin"
    (JAR + ".md5", True, True),
    ("/com/google/guava/guava/maven-metadata.xml", True, True),
    ("/com/google/guava/guava/maven-metadata.xml.sha1", True, True),
    (JAR + ".asc", False, False),
    ("/archetype-catalog.xml", False, False),
])
def test_what_is_checked_and_what_the_origin_serves_first(path, checked, origin_first):
    assert Maven().checks(path) is checked
    assert Maven().prefers_origin(path) is origin_first


class Origin:
    """A fetch that answers from a dict of URL → body and records what was asked."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies, self.asked = bodies, []

    async def __call__(self, url: str, headers: dict) -> bytes | None:
        self.asked.append(url)
        return self.bodies.get(url)


def expect(path: str, url: str, origin: Origin):
    return asyncio.run(Maven().expect(path, url, {}, origin))


def test_an_artifact_is_held_to_the_origins_sha256():
    origin = Origin({URL + ".sha256": f"{SHA256}  guava-33.0.0-jre.jar\n".encode(), URL + ".sha1": SHA1.encode()})
    assert expect(JAR, URL, origin) == Digest("sha256", bytes.fromhex(SHA256))
    assert sorted(origin.asked) == [URL + ".sha1", URL + ".sha256"]


def test_an_older_artifact_is_held_to_the_origins_sha1():
    origin = Origin({URL + ".sha1": SHA1.encode()})
    assert expect(JAR, URL + "?x=1", origin) == Digest("sha1", bytes.fromhex(SHA1))
    assert sorted(origin.asked) == [URL + ".sha1", URL + ".sha256"]  # the query is no part of it


def test_no_checksum_file_at_the_origin_means_no_expectation():
    assert expect(JAR, URL, Origin({})) is None
    assert expect(JAR, URL, Origin({URL + ".sha1": b"garbage", URL + ".sha256": b""})) is None


@pytest.mark.parametrize("path", [JAR + ".sha1", "/com/google/guava/guava/maven-metadata.xml", JAR + ".asc"])
def test_checksum_files_and_metadata_have_no_expectation_and_cost_no_fetch(path):
    origin = Origin({})
    assert expect(path, "https://repo1.maven.org/maven2" + path, origin) is None
    assert origin.asked == []


# The cache section proposed for rules/default.yaml's maven-central rule.
RULES = parse_rules(r"""
version: 1
profiles: {}
default_profile: direct
rules:
  - name: maven-central
    protocol: maven
    match: https://repo1.maven.org/maven2/
    cache:
      metadata: ["/**/maven-metadata.xml", "/**/maven-metadata.xml.*"]
      artifacts: ['re:/.+/([^/]+)/[^/]+/\1-[^/]+']
      ttl: 10m
""".replace("profiles: {}", "profiles: {direct: x}"))


@pytest.mark.parametrize("path, cls", [
    (JAR, "artifact"),
    (JAR + ".sha1", "artifact"),
    (JAR + ".asc", "artifact"),
    ("/com/google/protobuf/protoc/3.25.1/protoc-3.25.1-linux-x86_64.exe", "artifact"),
    ("/junit/junit/4.13.2/junit-4.13.2.pom", "artifact"),
    ("/com/google/guava/guava/maven-metadata.xml", "metadata"),
    ("/com/google/guava/guava/maven-metadata.xml.sha1", "metadata"),
    ("/org/apache/maven/plugins/maven-metadata.xml", "metadata"),
    ("/com/google/guava/guava/33.0.0-jre/failureaccess-1.0.jar", None),
    ("/archetype-catalog.xml", None),
    ("/.meta/prefixes.txt", None),
])
def test_the_proposed_cache_section_keeps_what_kind_calls_a_release_file(path, cls):
    rule = RULES.rules[0]
    assert classify(rule.cache, path) == cls
    # The cache and the protocol agree on what lies outside a release's folder.
    assert (cls is None) == (kind(path) == "other")
