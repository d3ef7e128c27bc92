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


def default_addons() -> list:
    rules = Rules()
    cache = Cache()
    relay = Relay(rules, cache)
    return [rules, Interception(rules), cache, relay, Admin(cache, relay.server, rules), Router(rules, relay.server),
            AccessLog(relay.server.metrics), Banner()]
