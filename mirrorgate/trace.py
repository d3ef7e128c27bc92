"""What happened to one request: the rule, the upstream that served it and each fallback
step. Rendered as the `X-Mirrorgate` response header and as the access-log record.

Header grammar (stable; tooling parses it):

    X-Mirrorgate: rule=<name>; upstream=<kind>:<url>[; cache=<state>][; fallback=<step>, <step>…]
                  [; skipped=<kind>:<url> circuit-open, …][; route=<note>]

where <kind> is `mirror`, `origin` or `private` (a rule's private registry), and a <step> is `<kind>:<url> <cause>` with
<cause> a failure kind (`connect_error`, `timeout`, …) or an HTTP status. `upstream=none`
means no upstream answered and Mirrorgate itself produced the response; `upstream=cache`
that the body came from the cache. <state> is HIT, MISS, STALE or REVALIDATED, present
for requests whose path the rule's cache classifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER = "X-Mirrorgate"


@dataclass(frozen=True)
class Hop:
    kind: str  # "mirror" | "origin" | "private"
    url: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.url}"


@dataclass
class Trace:
    rule: str
    upstream: Hop | None = None
    fallbacks: list[tuple[Hop, str]] = field(default_factory=list)
    skipped: list[Hop] = field(default_factory=list)
    route: str = ""
    cache: str = ""  # HIT | MISS | STALE | REVALIDATED, for cacheable requests

    def header(self) -> str:
        served_by = self.upstream or ("cache" if self.cache in ("HIT", "STALE") else "none")
        parts = [f"rule={self.rule}", f"upstream={served_by}"]
        if self.cache:
            parts.append(f"cache={self.cache}")
        if self.fallbacks:
            parts.append("fallback=" + ", ".join(f"{hop} {cause}" for hop, cause in self.fallbacks))
        if self.skipped:
            parts.append("skipped=" + ", ".join(f"{hop} circuit-open" for hop in self.skipped))
        if self.route:
            parts.append(f"route={self.route}")
        return "; ".join(parts)

    def record(self) -> dict:
        """The access-log fields this trace contributes."""
        return {
            "rule": self.rule,
            "upstream": str(self.upstream) if self.upstream else None,
            "fallbacks": [{"upstream": str(hop), "cause": cause} for hop, cause in self.fallbacks],
            "skipped": [str(hop) for hop in self.skipped],
            "route": self.route or None,
            "cache": self.cache or None,
        }


def parse_header(value: str) -> dict[str, str]:
    """Split an `X-Mirrorgate` header into its fields (values left as text)."""
    out: dict[str, str] = {}
    for part in value.split("; "):
        key, sep, val = part.partition("=")
        if sep:
            out[key.strip()] = val.strip()
    return out
