"""Who may use the proxy: the client allowlist and the cache of verified proxy credentials.

Pure decisions, used by addons/gate.py; nothing here touches a socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from cachetools import TTLCache

from mirrorgate.singleflight import SingleFlight

log = logging.getLogger("mirrorgate.gate")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Loopback only: a proxy started with --listen-host 0.0.0.0 serves nobody else until its
# operator names the networks that may use it.
DEFAULT_CLIENT_ALLOW = ("127.0.0.0/8", "::1/128")

# How long a verdict on a pair of credentials is kept, in seconds. Accepted pairs are kept
# long enough that a busy client pays for one bcrypt check every few minutes; refused pairs
# briefly, so that a client retrying the same wrong password cannot keep the CPU busy.
ACCEPTED_TTL = 300
REFUSED_TTL = 30
CACHE_SIZE = 4096


# ---- the client allowlist ---------------------------------------------------------------

def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs from option values; each value may hold several, separated by commas.

    Raises ValueError naming the entry that is not a network. A network written with host
    bits set (10.1.2.3/8) is refused rather than silently widened or narrowed: it is
    either a typo for a single address or for the network, and only the operator knows.
    """
    networks: list[Network] = []
    for entry in entries:
        for text in (t.strip() for t in entry.split(",")):
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError as e:
                if "has host bits set" in str(e):
                    wide = ipaddress.ip_network(text, strict=False)
                    host = text.split("/", 1)[0]
                    raise ValueError(f"{text!r} has host bits set: write {str(wide)!r} for the network "
                                     f"or {host!r} for the single address") from None
                raise ValueError(f"{text!r} is not an IP address or network (CIDR such as 10.0.0.0/8)") from None
    if not networks:
        raise ValueError("no network given, so no client could use the proxy "
                         "(to let every address in, give 0.0.0.0/0,::/0)")
    return tuple(networks)


def client_address(peername: tuple | None) -> Address | None:
    """The client's IP address as the allowlist compares it: without an IPv6 zone, and an
    IPv4 client of a dual-stack listener (::ffff:10.1.2.3) as the IPv4 address it is."""
    if not peername:
        return None
    try:
        address = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def allowed(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in n for n in networks)


def refusal_body(address: Address | None) -> str:
    """What a refused client reads: its own address, and who can change the decision."""
    who = str(address) if address is not None else "(unknown)"
    return (f"Mirrorgate refused this request: the client address {who} may not use this proxy.\n"
            f"The proxy's operator chooses the networks that may use it (option client_allow, a list of "
            f"CIDRs); ask them to add {who} or its network.\n")


# ---- the credential cache ----------------------------------------------------------------

Verify = Callable[[str, str], bool]


class CachingValidator:
    """Wraps a proxyauth validator so that each pair of credentials is checked once per TTL.

    proxyauth calls its validator synchronously on the event loop, for every plain-HTTP
    proxy request and every CONNECT; a bcrypt hash costs 0.2–0.5 s per call. `check()`
    runs the wrapped validator in a worker thread and keeps its verdict, so that
    proxyauth's own call that follows (`__call__`) is answered from memory.

    Verdicts are kept under an HMAC of the credentials with a key that never leaves this
    process, so that the cache holds no password and nothing a dictionary attack could use.
    """

    def __init__(self, inner: Verify, ttl: float = ACCEPTED_TTL, refused_ttl: float = REFUSED_TTL, *,
                 serial: bool = False, executor: Executor | None = None,
                 timer: Callable[[], float] = time.monotonic, maxsize: int = CACHE_SIZE) -> None:
        self.inner = inner
        self._accepted: TTLCache = TTLCache(maxsize, ttl, timer=timer)
        # Kept apart so that a flood of wrong passwords cannot evict accepted users.
        self._refused: TTLCache = TTLCache(maxsize, refused_ttl, timer=timer)
        self._secret = os.urandom(32)
        self._checks: SingleFlight[bool] = SingleFlight()
        self._executor = executor
        # Validators that talk to a server over one connection (LDAP) are not thread-safe.
        self._lock = threading.Lock() if serial else None

    def key(self, user: str, password: str) -> bytes:
        u = user.encode("utf-8", "surrogatepass")
        p = password.encode("utf-8", "surrogatepass")
        # Length-prefixed, so that no (user, password) pair can collide with another.
        return hmac.digest(self._secret, len(u).to_bytes(4, "big") + u + p, hashlib.sha256)

    def cached(self, key: bytes) -> bool | None:
        if key in self._accepted:
            return True
        if key in self._refused:
            return False
        return None

    def __call__(self, user: str, password: str) -> bool:
        key = self.key(user, password)
        verdict = self.cached(key)
        if verdict is None:
            verdict, elapsed, error = self._run(user, password)
            self._keep(key, user, verdict, elapsed, error)
        return verdict

    async def check(self, user: str, password: str) -> bool:
        """The verdict, computed off the event loop on a miss. Concurrent checks of the same
        credentials share one computation; a caller that goes away does not cancel it."""
        key = self.key(user, password)
        verdict = self.cached(key)
        if verdict is not None:
            return verdict
        return await self._checks.run(key, lambda: self._compute(key, user, password))

    async def _compute(self, key: bytes, user: str, password: str) -> bool:
        # Kept before returning (as SingleFlight asks): a check that finds the computation
        # just finished must leave proxyauth's synchronous call a hit, or bcrypt runs
        # again, on the event loop.
        result = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, user, password)
        self._keep(key, user, *result)
        return result[0]

    def _run(self, user: str, password: str) -> tuple[bool, float, str | None]:
        start = time.monotonic()
        try:
            if self._lock is None:
                ok, error = bool(self.inner(user, password)), None
            else:
                with self._lock:
                    ok, error = bool(self.inner(user, password)), None
        except Exception as e:  # a validator that fails refuses, as proxyauth treats it
            ok, error = False, f"{type(e).__name__}: {e}"
        return ok, time.monotonic() - start, error

    def _keep(self, key: bytes, user: str, verdict: bool, elapsed: float, error: str | None) -> None:
        if verdict:
            self._refused.pop(key, None)
            self._accepted[key] = True
        else:
            self._refused[key] = True
        # Logged on the event loop's side, once per check: this is the line that shows how
        # often the expensive check really runs.
        if error is not None:
            log.warning("proxyauth: checking the credentials of user %r failed: %s", user, error)
        log.info("proxyauth: credentials of user %r %s (checked in %d ms, verdict kept %d s)", user,
                 "accepted" if verdict else "refused", round(elapsed * 1000),
                 self._accepted.ttl if verdict else self._refused.ttl)
