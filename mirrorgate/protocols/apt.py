"""APT (Debian, Ubuntu): every client sees one consistent archive, and every byte a mirror
sends is checked against the chain that starts at the suite's signed Release file.

- `dists/<suite>/InRelease`, `Release`, `Release.gpg` are the archive's mutable pointers:
  the origin is asked first, mirrors only when it fails (apt checks the signature of
  whatever it gets).
- `dists/…/by-hash/<algorithm>/<hex>` files name their own digest.
- Every other file under `dists/<suite>/` (Packages, Sources, Translation-*, Contents-*,
  pdiffs) must have the SHA256 that the origin's Release lists for it, so that a mirror
  mid-sync never pairs the origin's Release with its own older Packages, which apt
  reports as "Hash Sum mismatch".
- Files under `pool/` must have the SHA256 that a Packages (or Sources) index names for
  them. The indices are read as they pass their own check on the way through the proxy;
  a package no index seen so far names is served unchecked (apt checks it against its
  own lists) and, when a mirror sent it, not kept.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from cachetools import TTLCache

from mirrorgate.protocols import Digest, Protocol, Trusted

log = logging.getLogger("mirrorgate.protocols.apt")

RELEASE_FILES = frozenset({"InRelease", "Release", "Release.gpg"})

# The algorithm directories of by-hash/ (the Release field names) and their hashlib names.
BY_HASH_ALGORITHMS = {"SHA256": "sha256", "SHA512": "sha512", "SHA1": "sha1", "MD5Sum": "md5"}

# <base>/dists/<suite>/<rest>: <base> is where the archive root sits below the rule's
# prefix (empty when the rule matches the archive root, as the default rules do).
DISTS = re.compile(r"^(?P<base>(?:/[^/]+)*?)/dists/(?P<suite>[^/]+)/(?P<rest>[^?#]+)$")
BY_HASH = re.compile(r"(?:^|/)by-hash/(?P<algo>[A-Za-z0-9]+)/(?P<hex>[0-9a-fA-F]+)$")
POOL = re.compile(r"^(?P<base>(?:/[^/]+)*?)/pool/(?P<rest>[^?#]+[^/])$")

PACKAGES_NAME = re.compile(r"(?:^|/)Packages(?:\.(?:gz|xz|bz2|lzma))?$")
SOURCES_NAME = re.compile(r"(?:^|/)Sources(?:\.(?:gz|xz|bz2|lzma))?$")

# How long a suite's Release, as the origin lists it, decides the checks of its index
# files: ten index files in a row cost one origin fetch.
RELEASE_TTL = 60.0
RELEASE_SUITES = 256
# Pool files whose SHA256 the proxy has read in checked indices: about 166 bytes each
# (a 16-byte key, a 32-byte digest), so ~40 MiB, enough for a few suites' main archives.
KNOWN_PACKAGES = 250_000
BATCH = 2048


# ---- where a path sits in the archive ---------------------------------------------------


@dataclass(frozen=True)
class Place:
    kind: str  # "release" | "by-hash" | "index" | "pool"
    base: str  # the archive root below the rule's prefix ("" for the prefix itself)
    suite: str = ""  # for dists/ files
    rest: str = ""  # below dists/<suite>/ (or pool/), still percent-encoded as asked


def place(path: str) -> Place | None:
    """Where a path (below the rule's prefix, query excluded) sits in an archive, or None
    for anything the protocol has no opinion about."""
    if m := DISTS.match(path):
        base, suite, rest = m.group("base", "suite", "rest")
        if rest in RELEASE_FILES:
            return Place("release", base, suite, rest)
        if BY_HASH.search(rest):
            return Place("by-hash", base, suite, rest)
        return Place("index", base, suite, rest)
    if m := POOL.match(path):
        return Place("pool", m.group("base"), rest=m.group("rest"))
    return None


def by_hash_digest(path: str) -> Digest | None:
    """The digest a by-hash path names, if its algorithm and length make sense."""
    m = BY_HASH.search(path)
    if not m or m.group("algo") not in BY_HASH_ALGORITHMS:
        return None
    algorithm = BY_HASH_ALGORITHMS[m.group("algo")]
    hexdigest = m.group("hex").lower()
    if len(hexdigest) != 2 * hashlib.new(algorithm).digest_size:
        return None
    return Digest(algorithm, bytes.fromhex(hexdigest))


def index_kind(rest: str) -> str | None:
    """"packages" or "sources" for an index whose entries name pool files, else None. A
    by-hash file is known by its directory: binary-<arch>/ holds Packages files (and a
    tiny Release), source/ holds Sources files."""
    if m := BY_HASH.search(rest):
        directory = rest[: m.start()].rstrip("/").rsplit("/", 1)[-1]
        if directory.startswith("binary-"):
            return "packages"
        return "sources" if directory == "source" else None
    if PACKAGES_NAME.search(rest):
        return "packages"
    return "sources" if SOURCES_NAME.search(rest) else None


def archive_root(url: str, path: str, base: str) -> str:
    """The archive's root URL (no trailing slash, percent-escapes undone), which Release
    paths and Packages `Filename` fields are relative to."""
    bare = url.split("?", 1)[0]
    return unquote(bare[: len(bare) - len(path)] + base)


# ---- Release files ------------------------------------------------------------------------


def signed_text(document: str) -> str:
    """The signed part of a clearsigned InRelease (RFC 4880 §7), or the document itself
    when it carries no armour (a plain Release)."""
    lines = document.splitlines()
    if not lines or lines[0].strip() != "-----BEGIN PGP SIGNED MESSAGE-----":
        return document
    body: list[str] = []
    in_headers = True
    for line in lines[1:]:
        if in_headers:
            in_headers = line.strip() != ""  # armour headers ("Hash: SHA512") end at a blank line
            continue
        if line.startswith("-----BEGIN PGP SIGNATURE-----"):
            break
        body.append(line.removeprefix("- "))  # dash-escaping
    return "\n".join(body) + "\n"


def release_hashes(document: str) -> dict[str, tuple[str, int]]:
    """Relative path -> (SHA256 hex, size) from a Release or InRelease document."""
    out: dict[str, tuple[str, int]] = {}
    in_section = False
    for line in signed_text(document).splitlines():
        if not line.startswith((" ", "\t")):
            in_section = line.split(":", 1)[0].strip() == "SHA256"
            continue
        if not in_section:
            continue
        parts = line.split()
        if len(parts) == 3 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]) and parts[1].isdigit():
            out[parts[2]] = (parts[0].lower(), int(parts[1]))
    return out


# ---- Packages and Sources indices --------------------------------------------------------


def package_digests(lines: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """(Filename, SHA256) for each stanza of a Packages index that has both."""
    filename = sha256 = None
    for line in lines:
        if not line.strip():
            if filename and sha256:
                yield filename, sha256
            filename = sha256 = None
        elif line.startswith(b"Filename:"):
            filename = line[9:].strip().decode("utf-8", "replace")
        elif line.startswith(b"SHA256:"):
            sha256 = _sha256(line[7:].strip())
    if filename and sha256:
        yield filename, sha256


def source_digests(lines: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """(Directory/name, SHA256) for each file a Sources index lists under
    Checksums-Sha256."""
    directory: str | None = None
    files: list[tuple[str, bytes]] = []
    in_checksums = False
    for line in lines:
        if not line.strip():
            if directory:
                yield from ((f"{directory}/{name}", digest) for name, digest in files)
            directory, files, in_checksums = None, [], False
        elif line[:1] in (b" ", b"\t"):
            parts = line.split()
            if in_checksums and len(parts) == 3 and (digest := _sha256(parts[0])):
                files.append((parts[2].decode("utf-8", "replace"), digest))
        else:
            in_checksums = line.startswith(b"Checksums-Sha256:")
            if line.startswith(b"Directory:"):
                directory = line[10:].strip().decode("utf-8", "replace").rstrip("/")
    if directory:
        yield from ((f"{directory}/{name}", digest) for name, digest in files)


def _sha256(value: bytes) -> bytes | None:
    try:
        digest = bytes.fromhex(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return digest if len(digest) == 32 else None


class _PreadFile(io.RawIOBase):
    """A body being checked, read by offset: the descriptor's own position belongs to the
    cache writer."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size, self._offset = fd, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._size - self._offset)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._offset)
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)


def decompressed(fd: int, size: int) -> io.BufferedIOBase:
    """The body as plain text, whatever compression its first bytes show (a by-hash name
    does not say)."""
    raw = io.BufferedReader(_PreadFile(fd, size), 1 << 16)
    magic = raw.peek(6)[:6]
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        raise ValueError("zstd-compressed index: not read")
    return raw


class PackageBook:
    """The SHA256 of pool files, keyed by their canonical URL, as checked indices name
    them. Bounded; the oldest entries go first. Filled from checks running in threads and
    read on the event loop, hence the lock."""

    def __init__(self, capacity: int = KNOWN_PACKAGES) -> None:
        self.capacity = capacity
        self._digests: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(url: str) -> bytes:
        return hashlib.blake2b(url.encode("utf-8", "surrogateescape"), digest_size=16).digest()

    def get(self, url: str) -> bytes | None:
        with self._lock:
            return self._digests.get(self._key(url))

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, root: str, entries: Iterable[tuple[str, bytes]]) -> int:
        """Record (path relative to the archive root, SHA256) pairs; how many."""
        count = 0
        batch: list[tuple[bytes, bytes]] = []
        for relative, digest in entries:
            batch.append((self._key(f"{root}/{relative.lstrip('/')}"), digest))
            if len(batch) >= BATCH:
                count += self._store(batch)
                batch = []
        return count + self._store(batch)

    def _store(self, batch: list[tuple[bytes, bytes]]) -> int:
        with self._lock:
            for key, digest in batch:
                self._digests.pop(key, None)  # a re-read entry becomes the newest
                self._digests[key] = digest
            while len(self._digests) > self.capacity:
                del self._digests[next(iter(self._digests))]
        return len(batch)

    def learn(self, root: str, kind: str, fd: int, size: int) -> int:
        """Read a checked Packages or Sources body; how many pool files it named."""
        parse = package_digests if kind == "packages" else source_digests
        try:
            with decompressed(fd, size) as text:
                return self.add(root, parse(text))
        except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
            log.info("could not read a %s index under %s: %s", kind, root, e)
            return 0


@dataclass(frozen=True)
class CheckedIndex:
    """An index file's digest; once the body has it, the pool files it names are learnt."""

    digest: Digest
    kind: str | None  # "packages" | "sources" | None (nothing to learn)
    root: str
    book: PackageBook = field(compare=False)

    def verify(self, fd: int, size: int) -> bool:
        if not self.digest.verify(fd, size):
            return False
        if self.kind is not None:
            self.book.learn(self.root, self.kind, fd, size)
        return True

    def __str__(self) -> str:
        return str(self.digest)


# ---- the protocol -------------------------------------------------------------------------


class Apt(Protocol):
    name = "apt"

    def __init__(self) -> None:
        self.packages = PackageBook()
        # Suite URL -> the fetch of its Release hashes, shared by concurrent checks.
        self._releases: TTLCache[str, asyncio.Future] = TTLCache(maxsize=RELEASE_SUITES, ttl=RELEASE_TTL)

    def prefers_origin(self, path: str) -> bool:
        found = place(path)
        return found is not None and found.kind == "release"

    def checks(self, path: str) -> bool:
        found = place(path)
        return found is not None and found.kind != "release"

    async def expect(self, path: str, url: str, options: dict, fetch: Trusted) -> Digest | CheckedIndex | None:
        found = place(path.split("?", 1)[0])
        if found is None or found.kind == "release":
            return None
        root = archive_root(url, path.split("?", 1)[0], found.base)
        if found.kind == "pool":
            sha256 = self.packages.get(f"{root}/pool/{unquote(found.rest)}")
            return Digest("sha256", sha256) if sha256 else None
        if found.kind == "by-hash":
            digest = by_hash_digest(found.rest)
            return CheckedIndex(digest, index_kind(found.rest), root, self.packages) if digest else None
        listed = await self.release(f"{root}/dists/{unquote(found.suite)}/", fetch)
        entry = listed.get(unquote(found.rest)) if listed else None
        if entry is None:
            return None
        return CheckedIndex(Digest("sha256", bytes.fromhex(entry[0])), index_kind(found.rest), root, self.packages)

    async def release(self, suite_url: str, fetch: Trusted) -> dict[str, tuple[str, int]] | None:
        """The suite's Release hashes as the origin lists them now (InRelease, else
        Release), fetched once per RELEASE_TTL however many index files ask."""
        pending = self._releases.get(suite_url)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_release(suite_url, fetch))
            self._releases[suite_url] = pending
        # Shielded: one fill giving up must not cancel the fetch the others wait for.
        return await asyncio.shield(pending)

    @staticmethod
    async def _fetch_release(suite_url: str, fetch: Trusted) -> dict[str, tuple[str, int]] | None:
        for name in ("InRelease", "Release"):
            body = await fetch(suite_url + name, {})
            if body is not None:
                return release_hashes(body.decode("utf-8", "replace"))
        log.info("no Release file at %s: its index files go unchecked", suite_url)
        return None
