from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.support.fakes import Fake, LoopThread, server_tls
from tests.support.pki import Pki, make_pki
from tests.support.proxy import ProxyProcess, start_proxy


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def loops():
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def fake(loops, pki):
    """fake(name, host="127.0.0.1", tls=True) -> a started Fake, stopped after the test."""
    made: list[Fake] = []
    tls = server_tls(str(pki.cert), str(pki.key))

    def make(name: str, host: str = "127.0.0.1", secure: bool = True, name_in_url: str | None = None) -> Fake:
        f = Fake(loops, name, host, tls if secure else None, name_in_url=name_in_url).start()
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


@pytest.fixture
def proxy(tmp_path, pki):
    """proxy(rules_yaml, *mitmdump_args, cache_dir=None) -> a running ProxyProcess, stopped
    after the test. Each proxy has a cache directory of its own unless one is given."""
    started: list[ProxyProcess] = []

    def make(rules_yaml: str, *args: str, cache_dir: Path | None = None) -> ProxyProcess:
        rules = tmp_path / f"rules-{len(started)}.yaml"
        rules.write_text(rules_yaml)
        p = start_proxy(rules, tmp_path / "confdir", pki.ca, *args, cache_dir=cache_dir)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def client_context(*cas: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cas[0]))
    for ca in cas[1:]:
        ctx.load_verify_locations(cafile=str(ca))
    return ctx


@pytest.fixture
def client(pki):
    """client(proxy) -> an httpx.Client through the proxy that trusts its CA and the fakes' CA."""
    made: list[httpx.Client] = []

    def make(p: ProxyProcess, *, trust_proxy_ca: bool = True, http2: bool = False) -> httpx.Client:
        cas = [p.ca, pki.ca] if trust_proxy_ca else [pki.ca]
        c = httpx.Client(proxy=p.url, verify=client_context(*cas), trust_env=False, timeout=30.0, http2=http2)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
