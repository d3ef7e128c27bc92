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

from mirrorgate import routing
from mirrorgate.circuit import CircuitBoard
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


def forward_headers(headers: Mapping[str, str], to_mirror: bool) -> dict[str, str]:
    """The client's request headers as an upstream should see them."""
    listed = {t.strip().lower() for k, v in headers.items() if k.lower() == "connection" for t in v.split(",")}
    out: dict[str, str] = {}
    for name, value in headers.items():
        n = name.lower()
        if n in HOP_BY_HOP or n in listed or n.startswith("x-mirrorgate-"):
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


async def walk(client: UpstreamClient, circuits: CircuitBoard, rule: Rule, origin: Prefix, path: str,
               profile: str, method: str, headers: Mapping[str, str],
               extra: Mapping[str, str] | None = None, exclude: frozenset[str] = frozenset(),
               mirror_path: str | None = None, origin_first: bool = False,
               authorize: Authorize | None = None, observe: Observe | None = None) -> Walked:
    """`exclude`: mirror URLs already found wanting for this request (bad bytes), or
    "*" for all of them. `mirror_path`: the path to ask mirrors for, where their layout
    differs from the origin's. `origin_first`: the origin is tried first and mirrors
    only stand in for it. `authorize`: how the proxy answers a mirror's own challenge.
    `observe`: told of each attempt (metrics)."""
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
                opened = await client.open(method, url, sent, rule.timeouts, follow_redirects=is_mirror)
                if (is_mirror and authorize is not None and opened.status == 401
                        and (challenge := opened.headers.get("WWW-Authenticate"))
                        and (auth := await authorize(upstream.url, below, challenge))):
                    # The mirror's own token, not the client's: ask once more with it.
                    opened.release()
                    opened = await client.open(method, url, {**sent, **auth}, rule.timeouts, follow_redirects=True)
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
