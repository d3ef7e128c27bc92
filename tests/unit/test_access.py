"""Access control without sockets: the client allowlist, the credential cache, the gate's
place in front of mitmproxy's proxyauth, and the block_* semantics docs/access-control.md
states."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import ipaddress
import threading

import pytest
from mitmproxy import exceptions
from mitmproxy.addons import block, proxyauth
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from addons.gate import Gate
from mirrorgate import access
from mirrorgate.access import CachingValidator, allowed, client_address, parse_networks, refusal_body

ip = ipaddress.ip_address


# ---- the allowlist ------------------------------------------------------------------------

def test_networks_come_comma_separated_or_one_per_value():
    nets = parse_networks(["10.0.0.0/8, 192.168.1.0/24", "fd00::/8", "203.0.113.7"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "203.0.113.7/32"]


@pytest.mark.parametrize("entry, message", [
    ("10.1.2.3/8", "'10.1.2.3/8' has host bits set: write '10.0.0.0/8' for the network or '10.1.2.3' "
                   "for the single address"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network (CIDR such as 10.0.0.0/8)"),
    ("10.0.0.0/8,office", "'office' is not an IP address or network (CIDR such as 10.0.0.0/8)"),
    ("", "no network given, so no client could use the proxy (to let every address in, give 0.0.0.0/0,::/0)"),
])
def test_a_bad_entry_is_named(entry, message):
    with pytest.raises(ValueError) as e:
        parse_networks([entry])
    assert str(e.value) == message


def test_an_empty_list_is_refused_rather_than_locking_everyone_out():
    with pytest.raises(ValueError, match="no network given"):
        parse_networks([])


def test_the_default_is_loopback_only():
    nets = parse_networks(access.DEFAULT_CLIENT_ALLOW)
    assert allowed(ip("127.0.0.1"), nets) and allowed(ip("127.4.5.6"), nets) and allowed(ip("::1"), nets)
    assert not allowed(ip("10.0.0.1"), nets) and not allowed(ip("192.168.1.10"), nets)


@pytest.mark.parametrize("peername, address", [
    (("10.1.2.3", 50000), "10.1.2.3"),
    (("::ffff:10.1.2.3", 50000, 0, 0), "10.1.2.3"),  # an IPv4 client of a dual-stack listener
    (("fe80::1%eth0", 50000, 0, 2), "fe80::1"),
    (("2001:db8::5", 50000, 0, 0), "2001:db8::5"),
])
def test_the_client_address_is_compared_as_the_network_sees_it(peername, address):
    assert client_address(peername) == ip(address)


@pytest.mark.parametrize("peername", [None, (), ("not-an-address", 1)])
def test_an_unknown_client_address_is_never_allowed(peername):
    assert client_address(peername) is None
    assert not allowed(None, parse_networks(["0.0.0.0/0", "::/0"]))


def test_an_ipv4_network_admits_a_mapped_client():
    nets = parse_networks(["10.0.0.0/8"])
    assert allowed(client_address(("::ffff:10.9.9.9", 1, 0, 0)), nets)
    assert not allowed(client_address(("::ffff:11.9.9.9", 1, 0, 0)), nets)


def test_the_refusal_names_the_address_and_the_option():
    body = refusal_body(ip("192.0.2.44"))
    assert "the client address 192.0.2.44 may not use this proxy" in body
    assert "option client_allow" in body and "ask them to add 192.0.2.44" in body


# ---- the credential cache -----------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A validator that knows one user and counts how often it is asked."""

    def __init__(self, user: str = "alice", password: str = "s3cret") -> None:
        self.good = (user, password)
        self.calls: list[tuple[str, str]] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, user: str, password: str) -> bool:
        self.calls.append((user, password))
        self.threads.append(threading.current_thread())
        return (user, password) == self.good


def test_accepted_credentials_are_checked_once_per_ttl():
    inner, clock = Counting(), Clock()
    v = CachingValidator(inner, ttl=300, refused_ttl=30, timer=clock)

    assert all(v("alice", "s3cret") for _ in range(5))
    assert len(inner.calls) == 1

    clock.now += 299
    assert v("alice", "s3cret") and len(inner.calls) == 1
    clock.now += 2
    assert v("alice", "s3cret") and len(inner.calls) == 2


def test_refused_credentials_are_remembered_only_briefly():
    inner, clock = Counting(), Clock()
    v = CachingValidator(inner, ttl=300, refused_ttl=30, timer=clock)

    assert not v("alice", "wrong") and not v("alice", "wrong")
    assert len(inner.calls) == 1
    clock.now += 31
    assert not v("alice", "wrong")
    assert len(inner.calls) == 2


def test_each_pair_of_credentials_has_its_own_verdict():
    inner = Counting()
    v = CachingValidator(inner)

    assert v("alice", "s3cret")
    assert not v("alice", "s3cret ") and not v("alice ", "s3cret") and not v("bob", "s3cret")
    # Moving a byte across the user/password boundary must not reuse a verdict.
    inner.good = ("a", "\0b")
    assert v("a", "\0b")
    assert not v("a\0", "b")
    assert len(inner.calls) == 6


def test_the_cache_key_holds_no_password_and_differs_per_process():
    a, b = CachingValidator(Counting()), CachingValidator(Counting())
    key = a.key("alice", "s3cret")
    assert b"s3cret" not in key and key != hashlib.sha256(b"alice\0s3cret").digest()
    assert key == a.key("alice", "s3cret") != b.key("alice", "s3cret")


def test_a_validator_that_raises_refuses():
    def broken(user, password):
        raise ConnectionError("LDAP server unreachable")

    v = CachingValidator(broken)
    assert v("alice", "s3cret") is False


def test_check_runs_the_validator_off_the_event_loop_and_proxyauths_call_then_hits_the_cache():
    inner = Counting()
    v = CachingValidator(inner)

    async def scenario():
        assert await v.check("alice", "s3cret")
        assert not await v.check("alice", "nope")

    asyncio.run(scenario())
    assert all(t is not threading.main_thread() for t in inner.threads)
    # proxyauth's synchronous calls, as they follow the gate's check:
    assert v("alice", "s3cret") and not v("alice", "nope")
    assert len(inner.calls) == 2


def test_concurrent_checks_of_the_same_credentials_share_one_computation():
    release = threading.Event()
    inner = Counting()

    def slow(user, password):
        release.wait(30)
        return inner(user, password)

    v = CachingValidator(slow)

    async def scenario():
        waiting = [asyncio.ensure_future(v.check("alice", "s3cret")) for _ in range(8)]
        await asyncio.sleep(0)  # let them all reach the pending computation
        release.set()
        return await asyncio.gather(*waiting)

    assert asyncio.run(scenario()) == [True] * 8
    assert len(inner.calls) == 1


def test_a_caller_that_goes_away_does_not_lose_the_verdict():
    release = threading.Event()
    inner = Counting()

    def slow(user, password):
        release.wait(30)
        return inner(user, password)

    v = CachingValidator(slow)

    async def scenario():
        first = asyncio.ensure_future(v.check("alice", "s3cret"))
        await asyncio.sleep(0)
        first.cancel()  # the client disconnected mid-check
        release.set()
        return await v.check("alice", "s3cret")

    assert asyncio.run(scenario())
    assert len(inner.calls) == 1


class InlineExecutor(concurrent.futures.Executor):
    """Runs the validator inside submit(): the computation is over before the event loop
    hears of it, so the test below can step the loop one iteration at a time."""

    def submit(self, fn, /, *args, **kwargs):
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(fn(*args, **kwargs))
        return done


@pytest.mark.parametrize("iterations", range(6))
def test_a_check_that_returns_has_kept_its_verdict_for_proxyauths_call_that_follows(iterations):
    # A check that starts while the first one is finishing must not return before the
    # verdict is kept: proxyauth calls the validator synchronously right after the gate,
    # and a miss there runs bcrypt again, on the event loop.
    inner = Counting()
    v = CachingValidator(inner, executor=InlineExecutor())

    async def scenario():
        first = asyncio.ensure_future(v.check("alice", "s3cret"))
        for _ in range(iterations):
            await asyncio.sleep(0)
        assert await v.check("alice", "s3cret")
        assert v("alice", "s3cret")  # proxyauth's call
        assert await first

    asyncio.run(scenario())
    assert len(inner.calls) == 1


def test_serial_validators_never_run_twice_at_once():
    running, overlaps = [0], []
    lock = threading.Lock()

    def ldap_like(user, password):
        with lock:
            running[0] += 1
            overlaps.append(running[0])
        try:
            return threading.Event().wait(0.01) or True
        finally:
            with lock:
                running[0] -= 1

    v = CachingValidator(ldap_like, serial=True)

    async def scenario():
        return await asyncio.gather(*(v.check(f"user{i}", "pw") for i in range(6)))

    assert asyncio.run(scenario()) == [True] * 6
    assert max(overlaps) == 1


# ---- the gate in front of proxyauth -------------------------------------------------------

def sha_htpasswd(tmp_path, user: str, password: str):
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    path = tmp_path / "htpasswd"
    path.write_text(f"{user}:{{SHA}}{digest}\n")
    return path


def proxy_flow(peer: str = "127.0.0.1", credentials: tuple[str, str] | None = None, method: str = "GET"):
    f = tflow.tflow()
    f.client_conn.peername = (peer, 40000)
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    f.request.method = method
    if credentials:
        f.request.headers["Proxy-Authorization"] = proxyauth.mkauth(*credentials).strip()
    return f


def test_the_gate_checks_once_and_proxyauth_finds_the_verdict(tmp_path):
    gate, pa = Gate(), proxyauth.ProxyAuth()
    with taddons.context(gate, pa) as tctx:
        tctx.configure(pa, proxyauth=f"@{sha_htpasswd(tmp_path, 'alice', 's3cret')}")
        counted = Counting()
        real = pa.validator
        pa.validator = lambda u, p: counted(u, p) and real(u, p)

        for _ in range(4):
            f = proxy_flow(credentials=("alice", "s3cret"))
            asyncio.run(gate.requestheaders(f))
            pa.requestheaders(f)
            assert f.response is None and f.metadata["proxyauth"] == ("alice", "s3cret")
            assert "Proxy-Authorization" not in f.request.headers  # proxyauth still strips it
        assert len(counted.calls) == 1
        assert all(t is not threading.main_thread() for t in counted.threads)

        f = proxy_flow(credentials=("alice", "wrong"))
        asyncio.run(gate.requestheaders(f))
        pa.requestheaders(f)
        assert f.response.status_code == 407


def test_socks5_credentials_are_checked_ahead_of_proxyauth_too(tmp_path):
    gate, pa = Gate(), proxyauth.ProxyAuth()
    with taddons.context(gate, pa) as tctx:
        tctx.configure(pa, proxyauth=f"@{sha_htpasswd(tmp_path, 'alice', 's3cret')}")
        counted = Counting()
        pa.validator = counted
        for _ in range(3):
            data = modes.Socks5AuthData(tflow.tclient_conn(), "alice", "s3cret")
            asyncio.run(gate.socks5_auth(data))
            pa.socks5_auth(data)
            assert data.valid
        assert len(counted.calls) == 1 and counted.threads[0] is not threading.main_thread()


def test_proxyauth_cache_0_leaves_proxyauth_as_it_is(tmp_path):
    gate, pa = Gate(), proxyauth.ProxyAuth()
    with taddons.context(gate, pa) as tctx:
        tctx.configure(gate, proxyauth_cache=0)
        tctx.configure(pa, proxyauth=f"@{sha_htpasswd(tmp_path, 'alice', 's3cret')}")
        asyncio.run(gate.requestheaders(proxy_flow(credentials=("alice", "s3cret"))))
        assert isinstance(pa.validator, proxyauth.Htpasswd)


def test_a_new_proxyauth_value_starts_an_empty_cache(tmp_path):
    gate, pa = Gate(), proxyauth.ProxyAuth()
    with taddons.context(gate, pa) as tctx:
        tctx.configure(pa, proxyauth=f"@{sha_htpasswd(tmp_path, 'alice', 'old')}")
        asyncio.run(gate.requestheaders(proxy_flow(credentials=("alice", "old"))))
        assert isinstance(pa.validator, CachingValidator)

        # Revoking a password: the operator rewrites the file and sets proxyauth again.
        tctx.configure(pa, proxyauth=f"@{sha_htpasswd(tmp_path, 'alice', 'new')}")
        f = proxy_flow(credentials=("alice", "old"))
        asyncio.run(gate.requestheaders(f))
        pa.requestheaders(f)
        assert f.response.status_code == 407


@pytest.mark.parametrize("method", ["GET", "CONNECT"])
def test_a_client_outside_the_allowlist_is_answered_403_and_the_chain_stops(method):
    gate = Gate()
    with taddons.context(gate) as tctx:
        tctx.configure(gate, client_allow=["10.0.0.0/8"])
        f = proxy_flow("192.168.7.7", method=method)
        hook = gate.http_connect if method == "CONNECT" else gate.requestheaders
        with pytest.raises(exceptions.AddonHalt):
            asyncio.run(hook(f))
        assert f.response.status_code == 403
        assert b"the client address 192.168.7.7 may not use this proxy" in f.response.content
        assert f.response.headers["Connection"] == "close"

        admitted = proxy_flow("10.20.30.40", method=method)
        asyncio.run(hook(admitted))
        assert admitted.response is None


def test_a_new_allowlist_judges_clients_already_seen_again():
    gate = Gate()
    with taddons.context(gate) as tctx:
        tctx.configure(gate, client_allow=["10.0.0.0/8"])
        asyncio.run(gate.requestheaders(proxy_flow("10.20.30.40")))
        tctx.configure(gate, client_allow=["192.168.0.0/16"])
        with pytest.raises(exceptions.AddonHalt):
            asyncio.run(gate.requestheaders(proxy_flow("10.20.30.40")))
        asyncio.run(gate.requestheaders(proxy_flow("192.168.7.7")))


def test_the_machines_own_traffic_in_local_mode_is_not_checked():
    gate = Gate()
    with taddons.context(gate) as tctx:
        tctx.configure(gate, client_allow=["10.0.0.0/8"])
        f = proxy_flow("192.168.7.7")
        f.client_conn.proxy_mode = ProxyMode.parse("local")
        asyncio.run(gate.requestheaders(f))
        assert f.response is None


@pytest.mark.parametrize("mode", ["socks5", "reverse:https://example.com"])
def test_clients_of_modes_without_an_http_answer_are_disconnected(mode):
    gate = Gate()
    with taddons.context(gate):
        client = tflow.tclient_conn()
        client.proxy_mode = ProxyMode.parse(mode)
        client.peername = ("192.168.7.7", 40000)
        gate.client_connected(client)
        assert client.error and "client_allow" in client.error

        client = tflow.tclient_conn()
        client.proxy_mode = ProxyMode.parse("regular")
        client.peername = ("192.168.7.7", 40000)
        gate.client_connected(client)  # answered per request instead, with a body
        assert client.error is None


@pytest.mark.parametrize("option, value, message", [
    ("client_allow", ["10.1.2.3/8"], "client_allow: '10.1.2.3/8' has host bits set"),
    ("client_allow", [], "client_allow: no network given"),
    ("proxyauth_cache", -1, "proxyauth_cache: -1 is negative"),
])
def test_bad_option_values_are_refused(option, value, message):
    gate = Gate()
    with taddons.context(gate) as tctx:
        with pytest.raises(exceptions.OptionsError, match=message):
            tctx.configure(gate, **{option: value})


def test_the_gate_sits_just_before_proxyauth():
    from mitmproxy import options
    from mitmproxy.addonmanager import traverse

    from mirrorgate.cli import MirrorgateMaster

    async def chain():
        master = MirrorgateMaster(options.Options())
        return [type(a).__name__ for a in master.addons.chain], [type(a).__name__ for a in traverse(master.addons.chain)]

    entries, names = asyncio.run(chain())
    assert names[names.index("Gate") + 1] == "ProxyAuth"
    assert names.index("Gate") < names.index("Router")
    # The others share one entry of the chain: every entry costs every hook of every flow.
    assert "Mirrorgate" in entries and "Router" not in entries


# ---- mitmproxy's block_global / block_private, as docs/access-control.md states them -------

@pytest.mark.parametrize("address, block_global, block_private, killed", [
    ("203.0.113.9", True, True, True),     # documentation ranges count as private
    ("8.8.8.8", True, False, True),        # public: killed by the default block_global=true
    ("8.8.8.8", False, False, False),
    ("::ffff:8.8.8.8", True, False, True),  # IPv4-mapped, unwrapped first
    ("10.1.2.3", True, False, False),      # private: allowed by default
    ("10.1.2.3", True, True, True),
    ("192.168.1.2", False, True, True),
    ("fd00::7", False, True, True),        # IPv6 unique local
    ("100.64.1.1", True, True, False),     # carrier-grade NAT: neither global nor private
    ("127.0.0.5", True, True, False),      # loopback: never blocked
    ("::1", True, True, False),
])
def test_block_options_kill_connections_as_documented(address, block_global, block_private, killed):
    b = block.Block()
    with taddons.context(b) as tctx:
        tctx.configure(b, block_global=block_global, block_private=block_private)
        client = tflow.tclient_conn()
        client.peername = (address, 40000)
        b.client_connected(client)
        assert bool(client.error) is killed
