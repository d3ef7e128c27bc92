"""RubyGems: the compact index (`/versions`, `/info/<gem>`, `/names`) and `.gem` files.

Each `.gem` is checked against the `checksum:` (SHA-256) that its version's line in
`/info/<gem>` records, read from the trusted `index` the rule names (default: the
request's own origin). A gem's file name does not say where its name ends and its
version begins (`foo-2-bar-1.0.0.gem`, `nokogiri-1.16.0-x86_64-linux.gem`), so each
reading of it is looked up in turn until the index knows one.

Bundler keeps its own copies of `/versions` and `/info/<gem>` and asks only for what
was appended since (`Range: bytes=<size-1>-`, `If-None-Match: "<md5 of its copy>"`),
then checks the whole result against the response's `ETag`. Bytes appended from a
source other than the one its copy came from (origin vs mirror, two mirrors at
different snapshots) do not fit, so these paths are served whole (`serves_whole`): a
200 from one upstream or the cache with that upstream's own `ETag`, or a 304 when the
client's copy is the one held. Bundler replaces its copy on a 200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from mirrorgate.protocols import Digest, Protocol

GEM_FILE = re.compile(r"^/gems/([^/]+)\.gem$")
INFO = re.compile(r"^/info/[^/]+$")
# Gem::Version#to_s: dot-separated, digits first; a "-" in a version becomes ".pre.",
# so in a file name a version is exactly one dash-separated segment.
VERSION = re.compile(r"^[0-9]+(\.[0-9A-Za-z]+)*$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Readings of a file name looked up at most: each costs a fetch from the origin.
MAX_READINGS = 3


@dataclass(frozen=True)
class GemFile:
    """One reading of `<name>-<version>[-<platform>].gem`."""

    name: str
    version: str
    platform: str | None  # None: a pure-Ruby gem ("ruby" never appears in file names)


@dataclass(frozen=True)
class InfoLine:
    """One version's line of a compact index `/info/<gem>` file:
    `<version>[-<platform>] <dep>:<req>&<req>,…|checksum:<sha256>,ruby:<req>,…`."""

    version: str
    platform: str | None
    dependencies: tuple[tuple[str, tuple[str, ...]], ...]
    requirements: tuple[tuple[str, tuple[str, ...]], ...]  # checksum, ruby, rubygems

    @property
    def checksum(self) -> str | None:
        for key, values in self.requirements:
            if key == "checksum" and len(values) == 1:
                return values[0]
        return None


def is_compact_index(path: str) -> bool:
    return path in ("/versions", "/names") or INFO.match(path) is not None


def gem_readings(path: str) -> list[GemFile]:
    """The ways `/gems/<file>.gem` splits into name, version and platform, the likeliest
    first: no platform (most gems are pure Ruby), then from the leftmost version."""
    m = GEM_FILE.match(path)
    if not m:
        return []
    parts = unquote(m.group(1)).split("-")
    readings = []
    for i in range(1, len(parts)):
        if VERSION.match(parts[i]):
            platform = "-".join(parts[i + 1:]) or None
            readings.append(GemFile("-".join(parts[:i]), parts[i], platform))
    readings.sort(key=lambda r: r.platform is not None)  # stable: left to right otherwise
    return readings


def _pairs(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for item in text.split(","):
        if not item:
            continue
        key, sep, values = item.partition(":")
        if not sep or not key:
            raise ValueError(f"no ':' in {item!r}")
        out.append((key, tuple(values.split("&"))))
    return tuple(out)


def parse_info_line(line: str) -> InfoLine | None:
    """A version's line, or None for the `---` header, blank lines and lines that do not
    follow the format (the rest of the file still counts)."""
    line = line.rstrip("\r")
    if not line or line == "---":
        return None
    head, _, rest = line.partition(" ")
    version, _, platform = head.partition("-")
    if not VERSION.match(version):
        return None
    deps, _, reqs = rest.partition("|")
    try:
        return InfoLine(version, platform or None, _pairs(deps), _pairs(reqs))
    except ValueError:
        return None


def gem_checksum(info: str, version: str, platform: str | None) -> str | None:
    """The SHA-256 (hex) `/info/<gem>` records for that version and platform; None if
    it records none, or disagrees with itself."""
    found = {line.checksum for line in map(parse_info_line, info.splitlines())
             if line is not None and line.version == version and line.platform == platform}
    if len(found) != 1:
        return None
    checksum = found.pop()
    return checksum if checksum is not None and SHA256_HEX.match(checksum) else None


def index_base(url: str, path: str, options: dict) -> str:
    """Where `/info/<gem>` is read: the rule's `index`, or the origin the request names."""
    if options.get("index"):
        return options["index"].rstrip("/")
    bare = url.split("?", 1)[0]
    return bare.removesuffix(path)


class RubyGems(Protocol):
    name = "rubygems"
    options = ("index",)

    def checks(self, path: str) -> bool:
        return bool(gem_readings(path))

    def serves_whole(self, path: str) -> bool:
        return is_compact_index(path)

    async def expect(self, path: str, url: str, options: dict, fetch) -> Digest | None:
        base = index_base(url, path, options)
        for reading in gem_readings(path)[:MAX_READINGS]:
            info = await fetch(f"{base}/info/{reading.name}", {})
            if info is None:
                continue
            checksum = gem_checksum(info.decode("utf-8", "replace"), reading.version, reading.platform)
            if checksum is not None:
                return Digest("sha256", bytes.fromhex(checksum))
        return None
