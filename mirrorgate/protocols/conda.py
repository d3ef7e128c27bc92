"""Conda channels (conda.anaconda.org): packages are checked against the `sha256` that
the origin's repodata.json records for them, and a mirror's repodata that names the
mirror in a CEP-15 `info.base_url` is rewritten to name the origin.

A channel keeps `<channel>/<subdir>/repodata.json` (also as `.zst` and `.bz2`, and
`current_repodata.json`) next to the packages it lists (`<name>-<version>-<build>.conda`
or `.tar.bz2`), keyed by file name under `packages` and `packages.conda`.

Big channels have big repodata (conda-forge's linux-64 is well over 200 MB as JSON), so
- the file-name → sha256 map is parsed once per repodata URL, in a thread, keeping only
  the digests, and remembered for a few minutes in a bounded cache, shared by every
  package download of that subdir;
- the repodata is fetched gzip-coded, and the relay's limit on a checked document
  (MAX_CHECK_DOCUMENT, 64 MiB as transferred) still applies: beyond it the digests are
  unknown and mirror packages of that subdir are served unchecked and never kept.
"""

from __future__ import annotations

import asyncio
import bz2
import io
import json
import posixpath
import re
import time
from json.decoder import scanstring
from urllib.parse import unquote, urljoin, urlsplit

import zstandard
from cachetools import TTLCache

from mirrorgate.protocols import Digest, Protocol, RewriteContext, RewriteError
from mirrorgate.singleflight import SingleFlight

PACKAGE_SUFFIXES = (".conda", ".tar.bz2")
REPODATA_NAMES = ("repodata.json", "current_repodata.json", "repodata_from_packages.json")
REPODATA_CODINGS = ("", ".zst", ".bz2")
# The sections of repodata.json that list files, by package format.
PACKAGE_SECTIONS = ("packages", "packages.conda")

# How long a parsed map serves package checks, and how old it must be before a file it
# does not list (a package published since) is worth fetching the repodata again for.
MAP_TTL = 300.0
REFRESH_AFTER = 30.0
# Bound on the digests held, counted in files: conda-forge's linux-64 and noarch
# together list well under a million; each costs roughly 200 bytes.
MAP_ENTRIES = 3_000_000
_clock = time.monotonic  # the age of a parsed map (replaced in tests)

BASE_URL = re.compile(rb'"base_url"\s*:\s*("(?:[^"\\]|\\.)*")')
SCAN_CHUNK = 1 << 20
# How far into a repodata document its leading `info` object is looked for.
INFO_HEAD = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


# ---- paths -----------------------------------------------------------------------------

def package_file(path: str) -> str | None:
    """The package file name of `/<…>/<subdir>/<file>.conda|.tar.bz2`, or None."""
    directory, _, name = path.rpartition("/")
    name = unquote(name)
    if not directory.strip("/") or not name.endswith(PACKAGE_SUFFIXES):
        return None
    stem = name[: -len(".conda")] if name.endswith(".conda") else name[: -len(".tar.bz2")]
    return name if stem and not stem.startswith(".") else None


def repodata_compression(path: str) -> str | None:
    """'', '.zst' or '.bz2' for a repodata file of any variant, None for anything else."""
    name = path.rpartition("/")[2]
    for base in REPODATA_NAMES:
        for suffix in REPODATA_CODINGS:
            if name == base + suffix:
                return suffix
    return None


def repodata_url(package_url: str) -> str:
    """The repodata.json of the subdir a package URL lies in (query dropped)."""
    parts = urlsplit(package_url)
    directory = parts.path.rpartition("/")[0]
    return f"{parts.scheme}://{parts.netloc}{directory}/repodata.json"


# ---- the digests repodata.json records ------------------------------------------------

def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()


def _expect(text: str, pos: int, char: str) -> int:
    pos = _skip(text, pos)
    if text[pos:pos + 1] != char:
        raise ValueError(f"repodata: expected {char!r} at offset {pos}")
    return pos + 1


def _object(text: str, pos: int, on_member) -> int:
    """Calls on_member(key, offset of its value) -> offset after the value, for each
    member of the JSON object at `pos`; returns the offset after the object."""
    pos = _skip(text, _expect(text, pos, "{"))
    if text.startswith("}", pos):
        return pos + 1
    while True:
        pos = _expect(text, pos, '"')
        key, pos = scanstring(text, pos)
        pos = _skip(text, _expect(text, pos, ":"))
        pos = _skip(text, on_member(key, pos))
        if text.startswith("}", pos):
            return pos + 1
        pos = _expect(text, pos, ",")


def sha256_map(body: bytes) -> dict[str, bytes]:
    """File name → sha256 for every package a repodata.json lists.

    Reads the document one package record at a time, so that memory holds the text and
    the digests but never the whole parsed document (several times the text's size for
    a big channel). Raises ValueError for a document that is not repodata."""
    text = body.decode("utf-8")
    found: dict[str, bytes] = {}

    def record(name: str, at: int) -> int:
        value, end = _DECODER.raw_decode(text, at)
        digest = value.get("sha256") if isinstance(value, dict) else None
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            found[name] = bytes.fromhex(digest)
        return end

    def section(key: str, at: int) -> int:
        if key in PACKAGE_SECTIONS and text[at:at + 1] == "{":
            return _object(text, at, record)
        return _DECODER.raw_decode(text, at)[1]

    _object(text, _skip(text, 0), section)
    return found


# ---- CEP-15 base_url -------------------------------------------------------------------

def _authority(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


def canonical_base_url(base_url: str, page_url: str, origin_dir: str, origin_root: str) -> str | None:
    """The origin URL for a base_url that names the mirror the repodata came from, or None
    to leave it (relative, or naming another host). `page_url`: where the mirror served
    the repodata; `origin_dir`: the origin URL of the repodata's directory;
    `origin_root`: the rule's origin prefix, which the result may not leave."""
    if not urlsplit(base_url).netloc:
        return None  # relative: it already resolves against wherever the client fetched from
    target = urlsplit(urljoin(page_url, base_url))
    if _authority(target.geturl()) != _authority(page_url):
        return None
    page_dir = urlsplit(page_url).path.rpartition("/")[0] or "/"
    origin = urlsplit(origin_dir)
    root = urlsplit(origin_root).path.rstrip("/")
    # Mirror and origin lay the channel out alike below their prefixes: the same steps
    # from the repodata's directory lead to the same place on the origin.
    below = origin.path[len(root):].strip("/")
    steps = posixpath.relpath(target.path or "/", page_dir)
    landed = posixpath.normpath(posixpath.join(below, steps)) if below else posixpath.normpath(steps)
    if landed == ".." or landed.startswith("../"):
        raise RewriteError(f"base_url {base_url!r} lies outside the mirror's copy of the channel")
    path = root + ("" if landed == "." else "/" + landed)
    if target.path.endswith("/") or landed == ".":
        path += "/"
    return f"{origin.scheme}://{origin.netloc}{path}"


def rewrite_base_urls(text: bytes, page_url: str, origin_dir: str, origin_root: str) -> bytes | None:
    """The repodata text with every base_url naming the mirror made to name the origin;
    None when there is none. The rest of the document stays byte-identical."""
    changed = False

    def fix(m: re.Match) -> bytes:
        nonlocal changed
        value = json.loads(m.group(1))
        new = canonical_base_url(value, page_url, origin_dir, origin_root) if isinstance(value, str) else None
        if new is None or new == value:
            return m.group(0)
        changed = True
        return m.group(0)[: m.start(1) - m.start(0)] + json.dumps(new).encode()

    out = BASE_URL.sub(fix, text)
    return out if changed else None


def leading_info_end(head: bytes) -> int | None:
    """Where the `info` object ends when it is the document's first member (conda-index
    and rattler-index write it first), read from the document's first bytes; None when
    it is not first, or does not end within `head`."""
    text = head.decode("latin-1")  # one character per byte: offsets stay byte offsets
    try:
        pos = _expect(text, _expect(text, 0, "{"), '"')
        key, pos = scanstring(text, pos)
        if key != "info":
            return None
        return _DECODER.raw_decode(text, _skip(text, _expect(text, pos, ":")))[1]
    except ValueError:
        return None


def rewrite_repodata(text: bytes, page_url: str, origin_dir: str, origin_root: str) -> bytes | None:
    """rewrite_base_urls, reading no further than the leading `info` object when there
    is one (CEP-15 puts base_url there), so that a big channel costs nothing extra."""
    end = leading_info_end(text[:INFO_HEAD])
    if end is None:
        return rewrite_base_urls(text, page_url, origin_dir, origin_root)
    info = rewrite_base_urls(text[:end], page_url, origin_dir, origin_root)
    return info + text[end:] if info is not None else None


def _read_head(reader, size: int) -> bytes:
    head = b""
    while len(head) < size and (chunk := reader.read(size - len(head))):
        head += chunk
    return head


def mentions_base_url(reader, head: bytes = b"") -> bool:
    """Whether a decompressing reader's text (after `head`, already read from it)
    contains a base_url key, read in chunks so that a big channel's repodata is never
    held decompressed."""
    needle = b'"base_url"'
    if needle in head:
        return True
    tail = head[-len(needle):]
    while chunk := reader.read(SCAN_CHUNK):
        if needle in tail + chunk:
            return True
        tail = chunk[-len(needle):]
    return False


def _open_compressed(body: bytes, compression: str):
    if compression == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
    return bz2.BZ2File(io.BytesIO(body))


def _decompress(body: bytes, compression: str) -> bytes:
    if compression == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read()
    return bz2.decompress(body)


def _compress(text: bytes, compression: str) -> bytes:
    if compression == ".zst":
        return zstandard.ZstdCompressor(level=9).compress(text)  # a rare path; speed over size
    return bz2.compress(text, 9)


# ---- the protocol ----------------------------------------------------------------------

class Conda(Protocol):
    name = "conda"

    def __init__(self) -> None:
        # repodata URL -> (when parsed, file name -> sha256); None when it could not be had.
        self._maps: TTLCache[str, tuple[float, dict[str, bytes] | None]] = TTLCache(
            maxsize=MAP_ENTRIES, ttl=MAP_TTL, getsizeof=lambda v: max(1, len(v[1] or ())))
        # One fetch per repodata URL at a time, however many packages wait on it.
        self._loading: SingleFlight[tuple[float, dict[str, bytes] | None]] = SingleFlight()

    def checks(self, path: str) -> bool:
        return package_file(path) is not None

    async def expect(self, path: str, url: str, options: dict, fetch) -> Digest | None:
        name = package_file(path)
        if name is None:
            return None
        source = repodata_url(url)
        loaded = self._maps.get(source)
        if loaded is None or (name not in (loaded[1] or {}) and _clock() - loaded[0] > REFRESH_AFTER):
            loaded = await self._load(source, fetch)
        digest = (loaded[1] or {}).get(name)
        return Digest("sha256", digest) if digest else None

    async def _load(self, source: str, fetch) -> tuple[float, dict[str, bytes] | None]:
        return await self._loading.run(source, lambda: self._fetch_map(source, fetch))

    async def _fetch_map(self, source: str, fetch) -> tuple[float, dict[str, bytes] | None]:
        # gzip-coded: the relay's size limit applies to what is transferred.
        body = await fetch(source, {"Accept-Encoding": "gzip"})
        digests = None
        if body is not None:
            try:
                digests = await asyncio.to_thread(sha256_map, body)
            except ValueError:  # UnicodeDecodeError and bad JSON alike
                digests = None
        loaded = (_clock(), digests)
        try:
            self._maps[source] = loaded
        except ValueError:
            pass  # larger than the whole bound: used for the packages waiting now only
        return loaded

    def wants_rewrite(self, path: str) -> bool:
        return repodata_compression(path) is not None

    def rewrite(self, path: str, content_type: str, body: bytes, ctx: RewriteContext) -> bytes | None:
        compression = repodata_compression(path)
        if compression is None:
            return None
        directory = path.rpartition("/")[0]
        origin_dir = f"{ctx.origin.url.rstrip('/')}{directory}/"
        if compression == "":
            return rewrite_repodata(body, ctx.page_url, origin_dir, ctx.origin.url)
        # Compressed variants are decompressed whole only when there is something to change.
        reader = _open_compressed(body, compression)
        head = _read_head(reader, INFO_HEAD)
        end = leading_info_end(head)
        if end is not None:
            if rewrite_base_urls(head[:end], ctx.page_url, origin_dir, ctx.origin.url) is None:
                return None
        elif not mentions_base_url(reader, head):
            return None
        new = rewrite_repodata(_decompress(body, compression), ctx.page_url, origin_dir, ctx.origin.url)
        return _compress(new, compression) if new is not None else None
