"""The status page: one HTML document a person opens in a browser, built from plain data
(the active rules, each mirror's circuit, the cache's counters). No script, no external
resource: it renders the same through any proxy and in any browser."""

from __future__ import annotations

import time
from collections.abc import Mapping
from html import escape

from mirrorgate.circuit import Circuit, State
from mirrorgate.rules import RuleSet

HEALTH = {State.CLOSED: ("healthy", "ok"), State.HALF_OPEN: ("probing", "warn"), State.OPEN: ("skipped", "bad")}

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #176b21; } .warn { color: #9a6700; } .bad { color: #b3261e; font-weight: bold; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def size(n: int | float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def mirror_health(circuit: Circuit | None, now: float) -> tuple[str, str, str]:
    """(health word, css class, recent latency) of a mirror."""
    if circuit is None:
        return "not used yet", "", "–"
    word, css = HEALTH[circuit.state]
    if circuit.state is State.OPEN:
        left = max(0.0, circuit.policy.cooldown - (now - circuit.opened_at))
        word = f"skipped ({plural(circuit.failures, 'failure')}; probed again in {left:.0f}s)"
    elif circuit.failures:
        word = f"{word} ({plural(circuit.failures, 'recent failure')})"
    latency = f"{circuit.latency_ewma * 1000:.0f} ms" if circuit.latency_ewma is not None else "–"
    return word, css, latency


def render(rules: RuleSet, profile: str, circuits: Mapping[str, Circuit], cache: Mapping,
           now: float | None = None, rules_error: str | None = None) -> str:
    now = time.monotonic() if now is None else now
    rows = []
    for rule in rules.rules:
        mirrors = rule.mirrors_for(profile)
        origins = "<br>".join(escape(p.url) for p in rule.match)
        if not mirrors:
            rows.append(f"<tr><td>{escape(rule.name)}</td><td>{origins}</td><td>origin only</td><td></td><td></td></tr>")
        for i, m in enumerate(mirrors):
            word, css, latency = mirror_health(circuits.get(m.url), now)
            first = f"<td rowspan={len(mirrors)}>{escape(rule.name)}</td><td rowspan={len(mirrors)}>{origins}</td>" \
                if i == 0 else ""
            rows.append(f'<tr>{first}<td>{escape(m.url)}</td><td class="{css}">{escape(word)}</td>'
                        f'<td class="num">{latency}</td></tr>')
    ratio = cache.get("hit_ratio")
    cache_rows = [
        ("Cache", "on" if cache.get("enabled") else "off"),
        ("Size", f"{size(cache.get('bytes', 0))} of {size(cache.get('max_bytes', 0))} ({cache.get('entries', 0)} entries)"),
        ("Hit ratio", f"{ratio:.1%}" if ratio is not None else "no lookups yet"),
        ("Bytes saved (served from the cache)", size(cache.get("bytes_from_cache", 0))),
        ("Bytes fetched from upstreams", size(cache.get("bytes_fetched", 0))),
        ("Hits / misses / stale / revalidated",
         f"{cache.get('hits', 0)} / {cache.get('misses', 0)} / {cache.get('stale', 0)} / {cache.get('revalidated', 0)}"),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mirrorgate status</title><style>{STYLE}</style></head>
<body>
<h1>Mirrorgate status</h1>
<p>Rules from <code>{escape(str(rules.source))}</code>, profile <b>{escape(profile)}</b>.</p>
{f'<p class="bad">The last edit of the rules was refused; the rules above stay in force: {escape(rules_error)}</p>'
 if rules_error else ""}
<h2>Cache</h2>
<table id="cache">{"".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in cache_rows)}</table>
<h2>Rules and mirrors</h2>
<table id="rules"><tr><th>Rule</th><th>Origin</th><th>Mirror</th><th>Health</th><th>Recent latency</th></tr>
{"".join(rows)}</table>
<p>Metrics for Prometheus: <a href="/metrics">/metrics</a>. Cache as JSON: <a href="/cache">/cache</a>.</p>
</body></html>
"""
