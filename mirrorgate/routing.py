"""Pure routing decisions: which rule a request belongs to, where it may go, and whether a
failed attempt moves on to the next upstream.

Everything here works on plain data; the addons and the relay feed it facts and act on
its answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from mirrorgate.rules import TRANSPORT_FAILURES, Prefix, Rule, RuleSet

# Headers that carry a client's identity. A request with one of them is never sent to a
# mirror: the credential belongs to the origin, and so may the content.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")

# Only these methods are safe to repeat against another upstream, and only they read
# public content.
RELAYED_METHODS = ("GET", "HEAD")

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")
# A backslash is a path separator to WHATWG URL parsers (Node) and to IIS.
_SEPARATORS = re.compile(r"[/\\]")
# What a method must be (RFC 9110 §5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Far above what any package manager sends, below what the relay's parser takes.
MAX_HEADER_FIELDS = 100
MAX_HEADER_BYTES = 64 * 1024

RouteKind = Literal["relay", "origin", "private", "reject"]


@dataclass(frozen=True)
class RequestFacts:
    method: str
    scheme: str
    host: str
    port: int
    path: str  # as sent, query included
    has_credentials: bool
    header_problem: str | None = None  # header_problem() of the request's fields


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    rule: Rule
    prefix: Prefix
    reason: str = ""  # why "origin", "private" or "reject"
    registry: Prefix | None = None  # for "private": where it goes (None: the origin)


def split_query(path: str) -> tuple[str, str]:
    """('/a/b', '?x=1') from '/a/b?x=1'."""
    i = path.find("?")
    return (path, "") if i < 0 else (path[:i], path[i:])


def path_problem(path: str) -> str | None:
    """Why a request path is unfit to be mapped onto another host, or None if it is fine.

    Dot-segments would let a request climb out of a rule's prefix once mapped onto a
    mirror's prefix, so they are refused rather than normalised: no package manager
    sends them.
    """
    if not path.startswith("/"):
        return "the request target must be an absolute path"
    if _CONTROL.search(path):
        return "the path contains spaces or control characters"
    if not path.isascii():
        return "the request target contains characters outside ASCII; they must be percent-encoded"
    if "#" in path:
        # Never sent to a server: the relay's URL type drops it, and with it whatever
        # hid a dot segment from the check below ('/..#').
        return "the request target contains a fragment ('#')"
    bare, _ = split_query(path)
    if _BAD_PERCENT.search(bare):
        return "the path contains a malformed percent-escape"
    if _ENCODED_CONTROL.search(bare):
        # No registry names a file with a line break in it; a mirror or a log that
        # decodes one would split what it sees.
        return "the path contains a percent-encoded control character"
    # Checked before and after decoding: a mirror that decodes %2F would see
    # "..%2f" as a segment of its own.
    if any(_dot_segment(unquote(s)) for s in _SEPARATORS.split(bare)) or \
            any(_dot_segment(s) for s in _SEPARATORS.split(unquote(bare))):
        return "the path contains '.' or '..' segments"
    return None


def _dot_segment(segment: str) -> bool:
    # Tomcat and Jetty drop a ';parameter' before they resolve '..;x'.
    return segment.split(";", 1)[0] in (".", "..")


def header_problem(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why a request's header fields are unfit to pass on to any upstream, or None.
    (mitmproxy itself refuses bad names and conflicting framing.)"""
    if len(fields) > MAX_HEADER_FIELDS:
        return f"the request has more than {MAX_HEADER_FIELDS} header fields"
    if sum(len(k) + len(v) + 4 for k, v in fields) > MAX_HEADER_BYTES:
        return f"the request's header fields are larger than {MAX_HEADER_BYTES // 1024} KiB"
    if sum(1 for k, _ in fields if k.lower() == b"host") > 1:
        return "the request has more than one Host header"
    for name, value in fields:
        if _CONTROL_BYTES.search(value):
            return f"the {name.decode('latin-1')} header contains control characters"
    return None


def route(rules: RuleSet, facts: RequestFacts) -> Route | None:
    """Where a request goes, or None if no rule owns it."""
    bare, _ = split_query(facts.path)
    # A target that is no path ('*') belongs to the host's root rule, which refuses it.
    found = rules.lookup(facts.scheme, facts.host, facts.port, bare if bare.startswith("/") else "/")
    if found is None:
        return None
    rule, prefix = found
    problem = path_problem(facts.path) or facts.header_problem
    if problem is None and not _TOKEN.fullmatch(facts.method):
        problem = "the method is not an HTTP token"
    if problem:
        return Route("reject", rule, prefix, problem)
    rest = prefix.remainder(bare) or "/"
    for private in rule.private:
        # Every method: a private package is published to, and read from, its own registry.
        if (pattern := private.matches(rest)) is not None:
            return Route("private", rule, prefix, f"private {pattern.text}", private.registry)
    if facts.method not in RELAYED_METHODS:
        return Route("origin", rule, prefix, f"method {facts.method}")
    if facts.has_credentials:
        return Route("origin", rule, prefix, "credentials")
    for p in rule.origin_only:
        if rest == p or rest.startswith(p + "/"):
            return Route("origin", rule, prefix, "origin_only")
    return Route("relay", rule, prefix)


def map_url(origin: Prefix, upstream: Prefix, path: str) -> str:
    """The URL on `upstream` that corresponds to `path` under `origin`."""
    bare, query = split_query(path)
    rest = origin.remainder(bare)
    if rest is None:
        raise ValueError(f"{path!r} is not under {origin.url}")
    return f"{upstream.origin}{upstream.path}{rest}{query}"


Outcome = str | int  # a transport failure kind, or an HTTP status


def should_fall_back(rule: Rule, outcome: Outcome) -> bool:
    """Whether a mirror's outcome sends the request on to the next upstream."""
    if isinstance(outcome, str):
        return outcome in rule.fallback_on
    if outcome < 400:
        return False
    return str(outcome) in rule.fallback_on or f"{outcome // 100}xx" in rule.fallback_on


def counts_against_mirror(outcome: Outcome) -> bool:
    """Whether an outcome says the mirror is unhealthy, as opposed to lacking one file.

    A lagging mirror's 404 sends that request elsewhere but must not take the mirror
    out of service for everything it does have.
    """
    if isinstance(outcome, str):
        return outcome in TRANSPORT_FAILURES
    return outcome >= 500 or outcome == 429
