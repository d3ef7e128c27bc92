"""Go.

The go command asks `<proxy>/sumdb/<name>/supported` before using the proxy for the
checksum database; a 404 there sends it straight to sum.golang.org. The proxy answers it
itself (protocol `go-sumdb`).

Module zips and go.mod files are checked (protocol `go-proxy`) against the `h1:` hashes
the checksum database records for them, looked up at the `sumdb` the rule names. The
go command still verifies the database's signed tree itself; this check keeps a
mirror's bad bytes from reaching it (and the cache) at all.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from dataclasses import dataclass

from cachetools import LRUCache

from mirrorgate.protocols import LocalAnswer, Protocol, read_chunks
from mirrorgate.singleflight import SingleFlight

ARTIFACT = re.compile(r"^/(.+)/@v/([^/]+)\.(zip|mod)$")


def unescape(path: str) -> str:
    """Module paths travel case-encoded: '!a' stands for 'A'."""
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), path)


def hash1(files: dict[str, str]) -> str:
    """golang.org/x/mod/sumdb/dirhash Hash1, from file names to SHA-256 hex digests."""
    summary = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def lookup_hashes(record: str, module: str, version: str) -> dict[str, str]:
    """{'zip': 'h1:…', 'mod': 'h1:…'} from a sumdb lookup response's record lines."""
    out = {}
    for line in record.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == module and parts[2].startswith("h1:"):
            if parts[1] == version:
                out["zip"] = parts[2]
            elif parts[1] == f"{version}/go.mod":
                out["mod"] = parts[2]
    return out


@dataclass(frozen=True)
class GoHash:
    kind: str  # "zip" | "mod"
    expected: str  # h1:…

    def verify(self, fd: int, size: int) -> bool:
        if self.kind == "mod":
            h = hashlib.sha256()
            for chunk in read_chunks(fd, size):
                h.update(chunk)
            return hash1({"go.mod": h.hexdigest()}) == self.expected
        try:
            with os.fdopen(os.dup(fd), "rb") as f, zipfile.ZipFile(f) as z:
                files = {}
                for info in z.infolist():
                    if info.is_dir():
                        continue
                    h = hashlib.sha256()
                    with z.open(info) as member:
                        for chunk in iter(lambda: member.read(1 << 20), b""):
                            h.update(chunk)
                    files[info.filename] = h.hexdigest()
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
        return hash1(files) == self.expected

    def __str__(self) -> str:
        return self.expected


class GoSumdb(Protocol):
    name = "go-sumdb"

    def local_answer(self, path: str) -> LocalAnswer | None:
        if path == "/supported":
            return LocalAnswer(200, b"", (("Content-Type", "text/plain; charset=utf-8"),
                                          ("Cache-Control", "public, max-age=86400")))
        return None


class GoProxy(Protocol):
    name = "go-proxy"
    options = ("sumdb",)

    def __init__(self) -> None:
        self._records: LRUCache[str, dict[str, str]] = LRUCache(maxsize=8192)
        self._lookups: SingleFlight[dict[str, str] | None] = SingleFlight()

    def checks(self, path: str) -> bool:
        return ARTIFACT.match(path) is not None

    async def expect(self, path: str, url: str, options: dict, fetch) -> GoHash | None:
        m = ARTIFACT.match(path)
        sumdb = options.get("sumdb")
        if not m or not sumdb:
            return None
        escaped, version, kind = m.groups()
        hashes = await self._record(f"{sumdb.rstrip('/')}/lookup/{escaped}@{version}", unescape(escaped),
                                    unescape(version), fetch)
        if hashes is None:
            return None  # no record (a new or private module): the go command decides
        expected = hashes.get(kind)
        return GoHash(kind, expected) if expected else None

    async def _record(self, lookup: str, module: str, version: str, fetch) -> dict[str, str] | None:
        """One lookup per module version: the go command asks for its .mod and then its
        .zip, often at once, and both are checked against the same record. Records never
        change, so they are kept; a failed lookup is not (it may be passing trouble)."""
        if (hashes := self._records.get(lookup)) is not None:
            return hashes
        return await self._lookups.run(lookup, lambda: self._look_up(lookup, module, version, fetch))

    async def _look_up(self, lookup: str, module: str, version: str, fetch) -> dict[str, str] | None:
        body = await fetch(lookup, {})
        if body is None:
            return None
        hashes = lookup_hashes(body.decode("utf-8", "replace"), module, version)
        self._records[lookup] = hashes
        return hashes
