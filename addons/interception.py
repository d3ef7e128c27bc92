"""Decrypts only the hosts that the rules name; every other CONNECT stays a raw tunnel.

A client that never trusted Mirrorgate's CA therefore still reaches every other host
with that host's own certificate.
"""

from __future__ import annotations

import re

from mitmproxy import ctx, exceptions

from addons.rules import Rules
from mirrorgate.rules import RuleSet

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
    """Keeps mitmproxy's allow_hosts equal to the rules' https origins, at start-up and
    after every rules reload.

    mitmproxy reads allow_hosts when a connection opens (its NextLayer decides once per
    connection), so a reload that adds a host intercepts it from the next connection on;
    a tunnel already open to it stays a tunnel until the client closes it. A host a
    reload removed stays decrypted on connections already open, and their requests, no
    longer owned by a rule, go to the origin untouched.
    """

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._following = False
        rules.followers.append(self.follow)

    def configure(self, updated: set[str]) -> None:
        if not {"rules", "profile", "allow_hosts", "ignore_hosts", "connection_strategy"} & updated:
            return
        if ctx.options.ignore_hosts:
            raise exceptions.OptionsError(
                "ignore_hosts cannot be used with Mirrorgate: it intercepts exactly the hosts its rules "
                "name and tunnels all others untouched")
        if self.rules.current is None or self._following:
            return
        self._intercept(self.rules.current)
        # An eager strategy would connect to the origin at CONNECT time, before the
        # request could be sent to a mirror.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.connection_strategy = "lazy"

    def follow(self, ruleset: RuleSet) -> None:
        """Intercept the hosts of a reloaded rule set. An OptionsError leaves allow_hosts
        as it was (mitmproxy rolls the option back)."""
        # While our own update of allow_hosts is announced, and while mitmproxy rolls it
        # back, configure must not set it again.
        self._following = True
        try:
            self._intercept(ruleset)
        finally:
            self._following = False

    def _intercept(self, ruleset: RuleSet) -> None:
        patterns = allow_patterns(ruleset.intercepted_authorities())
        if list(ctx.options.allow_hosts) != patterns:
            ctx.options.allow_hosts = patterns
