"""The fallback walk: try a rule's mirrors in order, skipping those whose circuit is open,
then the origin, until one gives an answer the rule accepts.

This is the one place where routing's pure verdicts meet the network; the relay and
the cache's fills both walk through here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from mirrorgate import routing
from mirrorgate.circuit import CircuitBoard
from mirrorgate.protocols import RewriteError
from mirrorgate.rules import Prefix, Rule
from mirrorgate.trace import Hop
from mirrorgate.upstream import HOP_BY_HOP, Opened, UpstreamClient, UpstreamFailure

log = logging.getLogger("mirrorgate.relay")


@dataclass
class Walked:
    hop: Hop | None = None  # who answered; None when nobody did
    opened: Opened | None = None
    failures: list[str] = field(default_factory=list)  # human-readable, for a 502 body
    fallbacks: list[tuple[Hop, str]] = field(default_factory=list)
    skipped: list[Hop] = field(default_factory=list)


# The relay sends GET and HEAD without a body, whatever the client sent; the client's
# framing must not go with them, or an upstream would take the start of the next
# request on the pooled connection for this one's body.
_BODY_HEADERS = frozenset({"content-length", "expect"})


def forward_headers(headers: Mapping[str, str], to_mirror: bool) -> dict[str, str]:
    """The client's request headers as an upstream should see them."""
    listed = {t.strip().lower() for k, v in headers.items() if k.lower() == "connection" for t in v.split(",")}
    out: dict[str, str] = {}
    for name, value in headers.items():
        n = name.lower()
        if n in HOP_BY_HOP or n in _BODY_HEADERS or n in listed or n.startswith("x-mirrorgate-"):
            continue
        if to_mirror and n in routing.CREDENTIAL_HEADERS:
            continue
        out[name] = value if name not in out else f"{out[name]}, {value}"
    return out


# Headers with which the proxy authenticates itself to a mirror: (mirror prefix URL,
# path below it, the mirror's WWW-Authenticate challenge or None before any attempt).
Authorize = Callable[[str, str, "str | None"], Awaitable["dict[str, str] | None"]]
# Told of each attempt: (upstream, seconds to response headers, or the failure kind).
Observe = Callable[[Hop, "float | None", "str | None"], None]
# A mirror's response headers as the client should see them: (mirror prefix URL, the URL
# it answered at, status, headers) -> new headers or None; raises RewriteError.
RewriteHeaders = Callable[[str, str, int, "list[tuple[str, str]]"], "list[tuple[str, str]] | None"]


@dataclass(frozen=True)
class Plan:
    """How one request walks, beyond the rule itself: what its protocol asks for."""

    mirror_path: str | None = None  # the path to ask mirrors for, where their layout differs
    origin_first: bool = False  # the origin is tried first; mirrors only stand in for it
    authorize: Authorize | None = None  # how the proxy answers a mirror's own challenge
    observe: Observe | None = None  # told of each attempt (metrics)
    follow_mirror_redirects: bool = True  # False: a mirror's redirect is handed to the client
    rewrite_headers: RewriteHeaders | None = None  # what a mirror's accepted answer's headers become


async def walk(client: UpstreamClient, circuits: CircuitBoard, rule: Rule, origin: Prefix, path: str,
               profile: str, method: str, headers: Mapping[str, str],
               extra: Mapping[str, str] | None = None, exclude: frozenset[str] = frozenset(),
               plan: Plan = Plan()) -> Walked:
    """`exclude`: mirror URLs already found wanting for this request (bad bytes), or
    "*" for all of them."""
    mirror_path, origin_first, authorize, observe = plan.mirror_path, plan.origin_first, plan.authorize, plan.observe
    follow_mirror_redirects, rewrite_headers = plan.follow_mirror_redirects, plan.rewrite_headers
    result = Walked()
    candidates = [(Hop("mirror", m.url), m) for m in rule.mirrors_for(profile)
                  if m.url not in exclude and "*" not in exclude]
    candidates.insert(0 if origin_first else len(candidates), (Hop("origin", origin.url), origin))

    for hop, upstream in candidates:
        is_mirror = hop.kind == "mirror"
        circuit = circuits.get(upstream.url, rule.circuit) if is_mirror else None
        # Admitted only when about to be tried: a half-open probe reserved for a mirror the
        # walk never reaches would keep that mirror out of service.
        if circuit is not None and not circuit.admit(time.monotonic()):
            result.skipped.append(hop)
            continue
        asked = mirror_path if is_mirror and mirror_path else path
        url = routing.map_url(origin, upstream, asked)
        sent = {**forward_headers(headers, is_mirror), **(extra or {})}
        started = time.monotonic()
        verdict_given = False
        try:
            try:
                below = origin.remainder(routing.split_query(asked)[0]) or "/"
                if is_mirror and authorize is not None and (auth := await authorize(upstream.url, below, None)):
                    sent.update(auth)
                opened = await client.open(method, url, sent, rule.timeouts,
                                           follow_redirects=is_mirror and follow_mirror_redirects)
                if (is_mirror and authorize is not None and opened.status == 401
                        and (challenge := opened.headers.get("WWW-Authenticate"))
                        and (auth := await authorize(upstream.url, below, challenge))):
                    # The mirror's own token, not the client's: ask once more with it.
                    opened.release()
                    opened = await client.open(method, url, {**sent, **auth}, rule.timeouts,
                                               follow_redirects=follow_mirror_redirects)
                outcome: routing.Outcome = opened.status
                if observe is not None:
                    observe(hop, time.monotonic() - started, None)
            except UpstreamFailure as f:
                opened, outcome = None, f.kind
                result.failures.append(f"{hop} {f.kind} ({f.detail})")
                if observe is not None:
                    observe(hop, None, f.kind)
            if circuit is not None:
                if opened is None or routing.counts_against_mirror(outcome):
                    circuit.failed(time.monotonic())
                else:
                    circuit.succeeded(time.monotonic(), time.monotonic() - started)
                verdict_given = True
            # An origin asked first hands over to the mirrors only when it is unreachable or
            # failing; its 404 is the truth about a mutable name.
            passes_on = (routing.should_fall_back(rule, outcome) if is_mirror else
                         origin_first and hop is not candidates[-1][0] and routing.counts_against_mirror(outcome))
            if passes_on:
                if opened is not None:
                    result.failures.append(f"{hop} {outcome}")
                    opened.release()
                result.fallbacks.append((hop, str(outcome)))
                log.info("%s: %s failed for %s (%s); falling back", rule.name, hop, url, outcome)
                continue
            if is_mirror and opened is not None and rewrite_headers is not None:
                try:
                    rewritten = rewrite_headers(upstream.url, str(opened.response.url), opened.status,
                                                list(opened.headers.items()))
                except RewriteError as e:
                    # A mirror's answer that cannot be made to name the origin is no answer.
                    opened.release()
                    result.failures.append(f"{hop} rewrite_error ({e})")
                    result.fallbacks.append((hop, "rewrite_error"))
                    log.info("%s: %s answered %s with headers that cannot be made canonical: %s",
                             rule.name, hop, url, e)
                    continue
                if rewritten is not None:
                    opened.headers = CIMultiDictProxy(CIMultiDict(rewritten))
            if opened is not None:
                result.hop, result.opened = hop, opened
            return result  # an answer, or a failure the rule does not fall back on
        finally:
            if circuit is not None and not verdict_given:
                circuit.abandoned()
    return result


# Response headers that speak for the host that sent them; from a mirror they would be
# taken as the origin's word.
MIRROR_ONLY_HEADERS = frozenset({"set-cookie", "strict-transport-security", "alt-svc", "public-key-pins"})


def response_headers(opened: Opened, from_mirror: bool) -> list[tuple[str, str]]:
    """An upstream's response headers as the client should see them."""
    listed = {t.strip().lower() for v in opened.headers.getall("Connection", []) for t in v.split(",")}
    drop = HOP_BY_HOP | listed | (MIRROR_ONLY_HEADERS if from_mirror else frozenset())
    return [(k, v) for k, v in opened.headers.items() if k.lower() not in drop]
