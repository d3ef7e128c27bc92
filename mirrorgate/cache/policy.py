"""Pure cache decisions: what class a path is, its key, whether an entry is fresh, whether
a response may be stored, and how a hit answers a request (conditionals, ranges, HEAD).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mirrorgate.rules import CachePolicy

Class = Literal["artifact", "metadata"]
Freshness = Literal["fresh", "stale", "expired"]

# Kept with an entry whose body Mirrorgate rewrote (and so gave its own ETag): the
# upstream's validator, for revalidation. Never sent to a client.
UPSTREAM_ETAG = "X-Mirrorgate-Upstream-ETag"

# Headers that describe the stored bytes, not the resource; a 304 never replaces them.
BODY_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding", "content-range"})


@dataclass(frozen=True)
class Entry:
    """A stored response, as the index knows it."""

    key: str
    url: str
    cls: Class
    status: int  # 200, or 404 for a negative entry
    headers: tuple[tuple[str, str], ...]
    size: int
    stored_at: float
    validated_at: float
    filled_by: str = ""
    name: str = field(default="", compare=False)  # the storage's own name for the body

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def classify(policy: CachePolicy | None, path: str) -> Class | None:
    """The class of a path below a rule's prefix, or None: not cached."""
    if policy is None:
        return None
    if any(p.matches(path) for p in policy.metadata):
        return "metadata"
    if any(p.matches(path) for p in policy.artifacts):
        return "artifact"
    return None


def _normalise(value: str) -> str:
    return " ".join(value.split())


def cache_key(url: str, cls: Class, policy: CachePolicy, headers: Mapping[str, str]) -> str:
    """The canonical origin URL, plus the request headers that select a metadata
    representation. Artifacts are one representation whatever was asked for."""
    if cls == "artifact" or not policy.vary:
        return url
    return "\n".join([url, *(f"{h}: {_normalise(headers.get(h, ''))}" for h in policy.vary)])


def freshness(entry: Entry, policy: CachePolicy, now: float) -> Freshness:
    age = now - entry.validated_at
    if entry.status != 200:
        return "fresh" if age < policy.negative_ttl else "expired"
    if entry.cls == "artifact":
        return "fresh"
    return "fresh" if age < policy.ttl else "stale"


def _cache_control(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> set[str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: set[str] = set()
    for k, v in items:
        if k.lower() == "cache-control":
            out |= {d.strip().split("=", 1)[0].lower() for d in v.split(",")}
    return out


def storable(status: int, headers: Iterable[tuple[str, str]], from_origin: bool) -> bool:
    """Whether a response may enter the shared cache: a 200, or a 404 the origin itself
    confirmed (a mirror's 404 may only mean it lags). Never what the upstream forbids."""
    if _cache_control(headers) & {"no-store", "private"}:
        return False
    return status == 200 or (status == 404 and from_origin)


def revalidation_headers(entry: Entry) -> dict[str, str]:
    out = {}
    if etag := entry.header(UPSTREAM_ETAG) or entry.header("etag"):
        out["If-None-Match"] = etag
    if modified := entry.header("last-modified"):
        out["If-Modified-Since"] = modified
    return out


def merge_not_modified(stored: tuple[tuple[str, str], ...], fresh: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A 304's headers update the stored ones, except those describing the body (and an
    ETag, when the stored one is Mirrorgate's own for a rewritten body)."""
    rewritten = any(k.lower() == UPSTREAM_ETAG.lower() for k, _ in stored)
    update = [(k, v) for k, v in fresh if k.lower() not in BODY_HEADERS and not (rewritten and k.lower() == "etag")]
    names = {k.lower() for k, _ in update}
    return tuple([(k, v) for k, v in stored if k.lower() not in names] + update)


# ---- answering from an entry -----------------------------------------------------------


@dataclass(frozen=True)
class HitPlan:
    status: int
    headers: tuple[tuple[str, str], ...]
    start: int = 0
    length: int = 0  # body bytes to send from `start`


def encoding_acceptable(accept_encoding: str | None, coding: str | None) -> bool:
    """RFC 9110 §12.5.3: may a body with this content-coding go to this client?"""
    if not coding or coding.lower() == "identity":
        return True
    if accept_encoding is None:
        return True  # no preference stated: any coding is acceptable
    coding = coding.lower()
    star = None
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        q = 1.0
        m = re.search(r"q\s*=\s*([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        token = token.strip().lower()
        if token == coding or (coding == "gzip" and token == "x-gzip"):
            return q > 0
        if token == "*":
            star = q > 0
    return bool(star)


def _etags(value: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in value.split(",") if t.strip()]


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(value: str, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """(start, length) for a single range, None to ignore the header (malformed or
    several ranges: a full 200 is always a valid answer), or 'unsatisfiable'."""
    m = _RANGE.match(value.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), min(n, size))
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = min(int(last), size - 1) if last else size - 1
    return (start, end - start + 1)


def plan_hit(entry: Entry, method: str, request: Mapping[str, str]) -> HitPlan | None:
    """How a stored entry answers this request, or None when it cannot (the client does
    not accept the stored content-coding)."""
    stored = tuple((k, v) for k, v in entry.headers if k.lower() not in BODY_HEADERS)
    coding = entry.header("content-encoding")
    if not encoding_acceptable(request.get("accept-encoding"), coding):
        return None
    body_headers = (("Content-Encoding", coding),) if coding else ()
    etag = entry.header("etag")
    if entry.status == 200:
        inm = request.get("if-none-match")
        if inm is not None:
            if etag and ("*" in _etags(inm) or etag.removeprefix("W/") in _etags(inm)):
                return HitPlan(304, stored)
        elif (ims := _date(request.get("if-modified-since"))) is not None:
            modified = _date(entry.header("last-modified"))
            if modified is not None and modified <= ims:
                return HitPlan(304, stored)
        rng = request.get("range")
        if rng is not None and method == "GET" and _if_range_holds(request.get("if-range"), entry):
            r = byte_range(rng, entry.size)
            if r == "unsatisfiable":
                return HitPlan(416, stored + (("Content-Range", f"bytes */{entry.size}"), ("Content-Length", "0")))
            if r is not None:
                start, length = r
                return HitPlan(206, stored + body_headers + (
                    ("Content-Range", f"bytes {start}-{start + length - 1}/{entry.size}"),
                    ("Content-Length", str(length))), start, length)
    headers = stored + body_headers + (("Content-Length", str(entry.size)),)
    return HitPlan(entry.status, headers, 0, 0 if method == "HEAD" else entry.size)


def _if_range_holds(if_range: str | None, entry: Entry) -> bool:
    if if_range is None:
        return True
    etag = entry.header("etag")
    if if_range.startswith(('"', "W/")):
        return bool(etag) and not etag.startswith("W/") and if_range == etag  # strong comparison only
    return if_range == entry.header("last-modified")
