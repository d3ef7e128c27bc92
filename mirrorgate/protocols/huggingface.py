"""Hugging Face Hub (huggingface.co): files resolved by commit are checked against what
the origin says about them, and a mirror's redirects and links are made to name the
origin.

`/<repo>/resolve/<revision>/<file>` (also under `/datasets/` and `/spaces/`) serves a
repository file. Resolved by a 40-hex commit it never changes; by a branch or tag it
does. The Hub answers a HEAD for it with the file's metadata:
- an LFS file: a 302 to a CDN (a signed URL) carrying `X-Repo-Commit`,
  `X-Linked-Etag` (the sha256 of the content) and `X-Linked-Size`;
- any other file: a 200 whose `ETag` is the git blob id (sha1 of `blob <size>\\0` and
  the content).
huggingface_hub reads that metadata off the HEAD's own answer, redirect included, so a
HEAD's redirect must reach the client instead of being followed inside the proxy; and
it follows a redirect to the Hub's own host itself. A mirror's `Location` and `Link`
naming the mirror are mapped onto the origin (the proxy sends those requests to the
mirror again); the Hub's CDN hosts are left as they are.

Requests with a token (`Authorization`) never reach this module: routing sends them to
the origin alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from cachetools import LRUCache

from mirrorgate.protocols import Digest, Protocol, RewriteError, read_chunks

# /[datasets/|spaces/]<repo id: one or two segments>/resolve/<revision>/<file path>
RESOLVE = re.compile(r"^/(?:(?:datasets|spaces|models)/)?[^/]+(?:/[^/]+)?/resolve/([^/]+)/.+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Response headers that carry URLs a client goes on to use: one URL each...
URL_HEADERS = frozenset({"location", "content-location", "x-xet-refresh-route"})
# ...or an RFC 8288 list of <URI-reference>; params.
LINK_TARGET = re.compile(r"<([^>]*)>")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What huggingface_hub reads off a HEAD: the commit, and the LFS object's sha256 and size.
FILE_METADATA = ("X-Repo-Commit", "X-Linked-Etag", "X-Linked-Size")


def resolved_revision(path: str) -> str | None:
    m = RESOLVE.match(path)
    return m.group(1) if m else None


def by_commit(path: str) -> bool:
    revision = resolved_revision(path)
    return revision is not None and COMMIT.match(revision) is not None


# ---- integrity -------------------------------------------------------------------------

@dataclass(frozen=True)
class GitBlob:
    """A file named by its git blob id: sha1 of `blob <size>\\0` followed by the content."""

    sha1: bytes

    def verify(self, fd: int, size: int) -> bool:
        h = hashlib.sha1(b"blob %d\0" % size)
        for chunk in read_chunks(fd, size):
            h.update(chunk)
        return h.digest() == self.sha1

    def __str__(self) -> str:
        return f"git-blob:{self.sha1.hex()}"


def _etag_value(value: str | None) -> str:
    value = (value or "").strip()
    if value.startswith("W/"):
        return ""  # a weak validator promises nothing about the bytes
    return value.strip('"').lower()


def expected_content(status: int, headers: dict[str, str]):
    """What a file must be, from the origin's answer to a HEAD of its resolve URL
    (lower-cased header names): the LFS sha256 from `X-Linked-Etag`, else the git blob
    id from the `ETag` of a file served in place. None when neither is there."""
    if status not in REDIRECTS and status != 200:
        return None
    linked = _etag_value(headers.get("x-linked-etag"))
    if re.fullmatch(r"[0-9a-f]{64}", linked):
        return Digest("sha256", bytes.fromhex(linked))
    etag = _etag_value(headers.get("etag"))
    if status == 200 and re.fullmatch(r"[0-9a-f]{40}", etag):
        return GitBlob(bytes.fromhex(etag))
    return None


def file_metadata(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The Hub's file metadata headers in an answer (lower-cased names)."""
    return tuple((name, headers[name.lower()]) for name in FILE_METADATA if name.lower() in headers)


def with_metadata(headers: list[tuple[str, str]], metadata: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """`headers` carrying `metadata` instead of any values of their own for those names."""
    names = {name.lower() for name, _ in metadata}
    return [(k, v) for k, v in headers if k.lower() not in names] + list(metadata)


# ---- URLs in headers -------------------------------------------------------------------

def _authority(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


def _under(url: str, prefix: str) -> str | None:
    """The part of `url` below the prefix URL (starting with "/", query kept), or None."""
    if _authority(url) != _authority(prefix):
        return None
    parts, base = urlsplit(url), urlsplit(prefix).path.rstrip("/")
    path = parts.path or "/"
    if path != base and not path.startswith(base + "/"):
        return None
    rest = path[len(base):] or "/"
    return rest + (f"?{parts.query}" if parts.query else "")


def canonical_url(reference: str, page_url: str, mirror_url: str, origin_url: str) -> str | None:
    """The origin URL for a URL reference a mirror sent (relative ones resolve against
    `page_url`, where it answered), or None to leave it: it names another host (the
    Hub's CDN, say). RewriteError when it names the mirror outside the mirror's prefix,
    where no origin URL corresponds."""
    absolute = urljoin(page_url, reference.strip())
    if _authority(absolute) != _authority(mirror_url):
        return None
    rest = _under(absolute, mirror_url)
    if rest is None:
        raise RewriteError(f"{reference!r} names the mirror outside {mirror_url}")
    fragment = urlsplit(absolute).fragment
    return origin_url.rstrip("/") + rest + (f"#{fragment}" if fragment else "")


def _canonical_value(name: str, value: str, page_url: str, mirror_url: str, origin_url: str) -> str:
    """One header's value with the URLs in it that name the mirror made to name the origin."""
    def one(reference: str) -> str:
        return canonical_url(reference, page_url, mirror_url, origin_url) or reference

    if name in URL_HEADERS:
        return one(value)
    if name == "link":
        return LINK_TARGET.sub(lambda m: f"<{one(m.group(1))}>", value)
    return value


def canonical_headers(path: str, status: int, headers: list[tuple[str, str]], page_url: str, mirror_url: str,
                      origin_url: str) -> list[tuple[str, str]] | None:
    """A mirror's response headers with every URL naming the mirror made to name the
    origin; None when nothing changes. RewriteError for a redirect that would send the
    client back to the very origin URL it asked for (a mirror that redirects to the
    Hub): through the proxy, that would loop."""
    out = [(name, _canonical_value(name.lower(), value, page_url, mirror_url, origin_url)) for name, value in headers]
    location = next((value for name, value in out if name.lower() == "location"), None)
    if status in REDIRECTS and location is not None and \
            _same_resource(urljoin(page_url, location), origin_url + path.lstrip("/")):
        raise RewriteError("the mirror redirects to the origin's URL for this very file")
    return out if out != headers else None


def _same_resource(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return _authority(a) == _authority(b) and (pa.path or "/") == (pb.path or "/")


# ---- the protocol ----------------------------------------------------------------------

class HuggingFace(Protocol):
    name = "huggingface"

    def __init__(self) -> None:
        # Origin URL of a file resolved by commit -> the metadata the origin's HEAD gave,
        # for the mirror's answer that a fill is about to keep (see rewrite_headers).
        self._metadata: LRUCache[str, tuple[tuple[str, str], ...]] = LRUCache(maxsize=4096)

    def checks(self, path: str) -> bool:
        return by_commit(path)

    async def expect(self, path: str, url: str, options: dict, fetch):
        if not by_commit(path):
            return None
        # Redirects are not followed: the LFS metadata is on the Hub's 302 itself.
        head = await fetch.head(url, {"Accept-Encoding": "identity"})
        if head is None:
            return None
        expected = expected_content(head.status, head.headers)
        if expected is not None and "x-repo-commit" in head.headers:
            self._metadata[url.partition("?")[0]] = file_metadata(head.headers)
        return expected

    def follows_redirects(self, path: str, method: str) -> bool:
        # A HEAD of a file is how clients read its metadata, which sits on the redirect.
        return not (method == "HEAD" and resolved_revision(path) is not None)

    def rewrite_headers(self, path: str, status: int, headers: list[tuple[str, str]], page_url: str,
                        mirror_url: str, origin_url: str) -> list[tuple[str, str]] | None:
        out = canonical_headers(path, status, headers, page_url, mirror_url, origin_url)
        known = self._metadata.get(origin_url.rstrip("/") + path) if status == 200 and by_commit(path) else None
        if known:
            # A file fetched whole (the mirror's redirect followed here) answers later HEADs
            # from the cache: with the origin's metadata, as the Hub would, not the CDN's.
            out = with_metadata(out or headers, known)
        return out
