"""Decrypts only the hosts that the rules name; every other CONNECT stays a raw tunnel.

A client that never trusted Mirrorgate's CA therefore still reaches every other host
with that host's own certificate.
"""

from __future__ import annotations

import re

from mitmproxy import ctx, exceptions

from addons.rules import Rules

# allow_hosts=[] would mean "intercept everything"; this pattern matches nothing.
NOTHING = "(?!)"


def allow_patterns(authorities: list[tuple[str, int]]) -> list[str]:
    """Anchored patterns for mitmproxy's allow_hosts, which are searched, not matched."""
    out = []
    for host, port in authorities:
        h = re.escape(host)
        if ":" in host:  # IPv6 literals appear with and without brackets
            h = rf"\[?{h}\]?"
        out.append(rf"^{h}:{port}$")
    return out or [NOTHING]


class Interception:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def configure(self, updated: set[str]) -> None:
        if not {"rules", "profile", "allow_hosts", "ignore_hosts", "connection_strategy"} & updated:
            return
        if ctx.options.ignore_hosts:
            raise exceptions.OptionsError(
                "ignore_hosts cannot be used with Mirrorgate: it intercepts exactly the hosts its rules "
                "name and tunnels all others untouched")
        if self.rules.current is None:
            return
        patterns = allow_patterns(self.rules.current.intercepted_authorities())
        if list(ctx.options.allow_hosts) != patterns:
            ctx.options.allow_hosts = patterns
        # An eager strategy would connect to the origin at CONNECT time, before the
        # request could be sent to a mirror.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.connection_strategy = "lazy"
