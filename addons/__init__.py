"""Mirrorgate's mitmproxy addons, one job each, in the order they see a flow.

    Gate          lets in only clients in client_allow; checks proxy credentials off the
                  event loop and remembers them (added by mirrorgate/cli.py just before
                  mitmproxy's proxyauth, ahead of the addons below)
    Rules         loads and validates the rules file, and reloads it when it changes; holds
                  the active rules and profile
    Interception  decrypts only the hosts the rules name; tunnels the rest untouched
    Cache         owns the cache's storage and its options
    Relay         runs the relay: cache, mirror selection, fallback, timeouts, circuits, streaming
    Admin         answers http://mirrorgate/: the status page, /metrics, cache stats and purge
    Router        hands routed requests to the relay, or straight to their origin
    AccessLog     one JSON line per routed request
    Banner        prints the address, CA and environment once listening
"""

from __future__ import annotations

from addons.access_log import AccessLog
from addons.admin import Admin
from addons.banner import Banner
from addons.cache import Cache
from addons.interception import Interception
from addons.relay import Relay
from addons.router import Router
from addons.rules import Rules


class Mirrorgate:
    """The addons above as one entry of mitmproxy's addon chain, in that order.

    mitmproxy hands every hook (eight per request, counting the `update` after each) to
    every entry of its chain, at a cost of a few microseconds per entry whether it has the
    hook or not: as separate entries, these addons cost a hit several percent of its CPU.
    As children of one entry they cost that once. Unlike separate entries, an exception
    in one child's hook skips its later siblings for that hook: hooks must not raise."""

    def __init__(self, children: list) -> None:
        self.addons = children


def default_addons() -> list:
    rules = Rules()
    cache = Cache()
    relay = Relay(rules, cache)
    return [rules, Interception(rules), cache, relay, Admin(cache, relay.server, rules), Router(rules, relay.server),
            AccessLog(relay.server.metrics), Banner()]
