"""Maven repositories (Maven Central and its mirrors): artifacts are checked against the
checksum files the origin publishes beside them, and the files that say what an artifact
or a version list must be (checksum files, maven-metadata.xml) come from the origin first.

A Maven 2 repository lays a release out as
`/<group as folders>/<artifactId>/<version>/<artifactId>-<version>[-<classifier>].<ext>`,
with `.sha1` and `.md5` files (newer releases also `.sha256`, `.sha512`) and `.asc`
signatures beside each file, and `maven-metadata.xml` (plus its own checksum files) one
folder up, listing the versions.

Why the origin serves the checksum files: Maven fetches `X.jar.sha1` right after
`X.jar` and, with `-C` (or `<checksumPolicy>fail`), refuses the artifact when they
disagree. The jar is already checked against the origin's checksum, so a mirror's
checksum file could only add a way to fail (a mirror that synced the file badly, or
that answers for an artifact it has not got) and never a faster right answer: checking
it would need the origin's file anyway. So checksum files are asked of the origin, and
cached as the rule says when it sent them; a mirror stands in only while the origin
fails, and its copy is served but never kept.

Why maven-metadata.xml comes from the origin too: it is the mutable pointer (version
ranges, LATEST/RELEASE, plugin prefixes and versions) and it is checked by Maven against
its own checksum file, which must come from the same place; a lagging mirror would
resolve ranges to old versions, and mixing its metadata with the origin's checksum file
would fail every strict build that asks. Both are small, and cached (as metadata) only
when the origin sent them.
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal

from mirrorgate.protocols import Digest, Protocol, Trusted

# Checksum files, by suffix, with the digest length (hex characters) each holds. Maven
# clients ask for .sha1 (then .md5); .sha256 and .sha512 sit beside newer releases.
CHECKSUM_FILES = {".sha512": ("sha512", 128), ".sha256": ("sha256", 64), ".sha1": ("sha1", 40),
                  ".md5": ("md5", 32)}
# The checksum files an artifact's expectation is read from, strongest first. MD5 is
# left out: a mirror that can choose its bytes can meet an MD5.
TRUSTED_CHECKSUMS = (".sha256", ".sha1")
SIGNATURE = ".asc"
METADATA = "maven-metadata.xml"
HEX = re.compile(r"[0-9a-fA-F]+")

Kind = Literal["artifact", "checksum", "signature", "metadata", "other"]


def kind(path: str) -> Kind:
    """What a path below a repository's root is.

    `artifact`: a file in a release's folder, named after its artifactId (jar, pom,
    module, aar, war, zip, tar.gz, exe, cyclonedx.json, …); `checksum`: a checksum file
    of anything, metadata included; `signature`: an `.asc`; `metadata`: a
    maven-metadata.xml; `other`: the rest (archetype catalogs, indexes, folder listings).
    """
    segments = path.split("/")
    file = segments[-1]
    if file == METADATA:
        return "metadata"
    if any(file.endswith(suffix) and len(file) > len(suffix) for suffix in CHECKSUM_FILES):
        return "checksum"
    # `/<group…>/<artifactId>/<version>/<file>`: at least one group folder, and a file
    # named after the artifactId, which is how a release's own files are told from
    # anything else that might sit in a folder.
    if len(segments) < 5 or segments[0] != "" or not all(segments[1:-1]):
        return "other"
    artifact_id = segments[-3]
    if not file.startswith(artifact_id + "-") or len(file) == len(artifact_id) + 1:
        return "other"
    return "signature" if file.endswith(SIGNATURE) else "artifact"


def parse_checksum(body: bytes, suffix: str) -> Digest | None:
    """The digest a checksum file holds, or None if it holds none of the right length.

    Seen in the wild: just the hex digest; `<hex>  <file name>` (sha1sum's output);
    `SHA1(<file>)= <hex>` (openssl's); `MD5 (<file>) = <hex>` (BSD's); upper-case hex; a
    trailing newline or none. The first token of the first non-blank line that is hex of
    the algorithm's length is the digest."""
    algorithm, length = CHECKSUM_FILES[suffix]
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    for token in line.split():
        if len(token) == length and HEX.fullmatch(token):
            return Digest(algorithm, bytes.fromhex(token))
    return None


def strongest(found: dict[str, bytes | None]) -> Digest | None:
    """The expectation from the origin's checksum files that were found (suffix → body),
    strongest algorithm first; a file that holds no valid digest is passed over."""
    for suffix in TRUSTED_CHECKSUMS:
        body = found.get(suffix)
        if body is not None and (digest := parse_checksum(body, suffix)) is not None:
            return digest
    return None


class Maven(Protocol):
    name = "maven"

    def checks(self, path: str) -> bool:
        # Checksum files and metadata are "checked" with no expectation: the relay keeps
        # such a body only when the origin sent it. When the origin is down, a mirror's
        # copy is better than none, but a wrong or lagging one must not outlive the
        # outage, and metadata must never be kept from one place and its checksum file
        # from another. Signatures are left to the client: a mirror cannot forge one, so
        # a bad one only fails loudly.
        return kind(path) in ("artifact", "checksum", "metadata")

    def prefers_origin(self, path: str) -> bool:
        return kind(path) in ("checksum", "metadata")

    async def expect(self, path: str, url: str, options: dict, fetch: Trusted) -> Digest | None:
        if kind(path) != "artifact":
            return None
        base = url.split("?", 1)[0]
        # Both at once: older releases on Central have no .sha256, and waiting for its 404
        # before asking for the .sha1 would add a round trip to the origin, often a slow
        # one from where the mirrors are, before every such artifact.
        bodies = await asyncio.gather(*(fetch(base + suffix, {}) for suffix in TRUSTED_CHECKSUMS))
        # No checksum file at the origin: nothing to check against, so mirror bytes are
        # served unchecked and never kept (the relay's rule for a check it cannot make).
        return strongest(dict(zip(TRUSTED_CHECKSUMS, bodies)))

