"""Who may use the proxy, as real clients meet it: 407 without credentials, 200 with them,
403 from an address outside the allowlist, bcrypt checks remembered; and a refused client
never makes the proxy contact any upstream."""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import client_context
from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT, Fake
from tests.support.proxy import clean_env, run_to_exit

pytestmark = pytest.mark.e2e

# As `htpasswd -B -C 12` writes them (made with passlib's bcrypt, ident 2y): alice / s3cret.
# bob's is Apache's {SHA} form: bob / hunter2. Both forms are read by mitmproxy 11 and 12.
HTPASSWD = ("alice:$2y$12$6BTRGIqmA2MeQzgw0JEv0ujlnfL4Nd3bOiHv4Qp50O3BuzQzH6YOa\n"
            "bob:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n")
ALICE = ("alice", "s3cret")
BOB = ("bob", "hunter2")

LISTEN = "127.0.0.2"    # the proxy's address in the allowlist test, not 127.0.0.1
OUTSIDER = "127.0.0.3"  # a client address the allowlist leaves out


@dataclass
class World:
    origin: Fake           # https origin that a rule names (decrypted, sent to `mirror`)
    mirror: Fake
    plain_origin: Fake     # http:// origin that a rule names
    plain_mirror: Fake
    elsewhere: Fake        # https host no rule names (a raw tunnel)
    plain_elsewhere: Fake  # http host no rule names (forwarded as it is)

    @property
    def fakes(self) -> list[Fake]:
        return [self.origin, self.mirror, self.plain_origin, self.plain_mirror, self.elsewhere,
                self.plain_elsewhere]

    def rules(self) -> str:
        return f"""\
version: 1
profiles: {{test: "fakes"}}
default_profile: test
defaults:
  timeouts: {{connect: 2s, first_byte: 5s, idle: 10s}}
rules:
  - name: secure
    match: {self.origin.url}
    mirrors:
      test: [{self.mirror.url}]
  - name: plain
    match: {self.plain_origin.url}
    mirrors:
      test: [{self.plain_mirror.url}]
"""

    def targets(self) -> dict[str, str]:
        return {"rule https": self.origin.url + "f", "other https": self.elsewhere.url + "f",
                "rule http": self.plain_origin.url + "f", "other http": self.plain_elsewhere.url + "f"}

    def upstream_hits(self) -> int:
        return sum(len(f.hits) for f in self.fakes)


@pytest.fixture
def world(fake) -> World:
    w = World(fake("origin", "127.0.0.4"), fake("mirror", "127.0.0.5"),
              fake("plain-origin", "127.0.0.6", secure=False), fake("plain-mirror", "127.0.0.7", secure=False),
              fake("elsewhere", "127.0.0.8"), fake("plain-elsewhere", "127.0.0.9", secure=False))
    for f in w.fakes:
        f.serve("/f", f"from {f.name}".encode())
    return w


@pytest.fixture
def htpasswd(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(HTPASSWD)
    return path


@pytest.fixture
def through(pki):
    """through(proxy_url, ca, auth=None) -> an httpx client via the proxy, sending `auth` as
    proxy credentials. (httpx cannot choose its local address through a proxy: the tests
    use curl --interface and raw sockets for that.)"""
    made: list[httpx.Client] = []

    def make(proxy_url: str, ca, auth: tuple[str, str] | None = None) -> httpx.Client:
        c = httpx.Client(proxy=httpx.Proxy(proxy_url, auth=auth), verify=client_context(ca, pki.ca),
                         trust_env=False, timeout=30.0)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def raw_connect(proxy: tuple[str, int], authority: str, source: str, auth: tuple[str, str] | None = None) -> bytes:
    """A CONNECT as a client sends it, from `source`; everything the proxy answers until it
    closes the connection."""
    extra = ""
    if auth:
        extra = f"Proxy-Authorization: Basic {base64.b64encode(':'.join(auth).encode()).decode()}\r\n"
    with socket.create_connection(proxy, timeout=WAIT, source_address=(source, 0)) as s:
        s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60, env=clean_env())


def wait_for_line(p, needle: str) -> None:
    """Until the proxy's output (read by another thread) holds `needle`, at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not any(needle in line for line in list(p.output)):
        assert time.monotonic() < deadline, f"no {needle!r} in the proxy's output:\n" + p.text()[-3000:]
        threading.Event().wait(0.02)


def authority(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def test_without_credentials_every_request_gets_407_and_no_upstream_is_asked(world, proxy, through, htpasswd,
                                                                            tmp_path, pki):
    p = proxy(world.rules(), "--set", f"proxyauth=@{htpasswd}")
    c = through(p.url, p.ca)

    for name, url in world.targets().items():
        if url.startswith("https:"):
            with pytest.raises(httpx.ProxyError, match="407"):
                c.get(url)
        else:
            r = c.get(url)
            assert r.status_code == 407, name
            assert r.headers["Proxy-Authenticate"] == 'Basic realm="mitmproxy"'
    # Mirrorgate's own management requests sit behind the same door.
    assert c.get("http://mirrorgate/cache").status_code == 407

    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    out = curl("-o", "/dev/null", "-w", "%{http_connect}", "--proxy", p.url, "--cacert", str(bundle),
               world.origin.url + "f")
    assert out.returncode != 0 and out.stdout == "407"

    assert world.upstream_hits() == 0


def test_with_credentials_rule_hosts_reach_their_mirror_and_other_hosts_their_own(world, proxy, through, htpasswd,
                                                                                tmp_path, pki):
    p = proxy(world.rules(), "--set", f"proxyauth=@{htpasswd}")
    c = through(p.url, p.ca, auth=ALICE)

    r = c.get(world.origin.url + "f")
    assert r.status_code == 200 and r.content == b"from mirror"
    assert header(r)["upstream"] == f"mirror:{world.mirror.url}"
    r = c.get(world.plain_origin.url + "f")
    assert r.status_code == 200 and r.content == b"from plain-mirror"
    assert c.get(world.elsewhere.url + "f").content == b"from elsewhere"
    assert through(p.url, p.ca, auth=BOB).get(world.plain_elsewhere.url + "f").content == b"from plain-elsewhere"

    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    out = curl("--proxy", p.url, "--proxy-user", ":".join(BOB), "--cacert", str(bundle), world.origin.url + "f")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from mirror"

    assert world.origin.count() == 0 and world.plain_origin.count() == 0
    assert world.mirror.count("/f") == 2 and world.plain_mirror.count("/f") == 1
    # proxyauth still takes the credentials off what it forwards.
    forwarded = world.plain_mirror.hits + world.plain_elsewhere.hits
    assert forwarded and not any(k.lower() == "proxy-authorization" for h in forwarded for k in h.headers)


def test_a_wrong_password_or_an_unknown_user_gets_407(world, proxy, through, htpasswd):
    p = proxy(world.rules(), "--set", f"proxyauth=@{htpasswd}")

    for auth in [("alice", "S3cret"), ("alice", ""), ("mallory", "s3cret")]:
        c = through(p.url, p.ca, auth=auth)
        assert c.get(world.plain_origin.url + "f").status_code == 407
        assert c.get(world.plain_elsewhere.url + "f").status_code == 407
        with pytest.raises(httpx.ProxyError, match="407"):
            c.get(world.origin.url + "f")

    assert world.upstream_hits() == 0


def test_a_bcrypt_check_runs_once_and_its_verdict_is_remembered(world, proxy, through, htpasswd, pki):
    p = proxy(world.rules(), "--set", f"proxyauth=@{htpasswd}")
    accepted = "proxyauth: credentials of user 'alice' accepted"

    # Plain-HTTP proxy requests are each checked by proxyauth, every CONNECT too: ten
    # requests on separate connections, the first four at once.
    def one(url: str) -> int:
        with httpx.Client(proxy=httpx.Proxy(p.url, auth=ALICE), verify=client_context(p.ca, pki.ca),
                          trust_env=False, timeout=30) as c:
            return c.get(url).status_code

    urls = [world.plain_elsewhere.url + "f"] * 4 + [world.plain_origin.url + "f", world.elsewhere.url + "f"] * 3
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, urls[:4])) == [200] * 4
    assert [one(u) for u in urls[4:]] == [200] * 6

    # The proxy logs in order: once a later client's line is there, all of alice's are.
    with pytest.raises(httpx.ProxyError, match="407"):
        through(p.url, p.ca, auth=("zed", "x")).get(world.elsewhere.url + "f")
    wait_for_line(p, "proxyauth: credentials of user 'zed' refused")

    assert sum(accepted in line for line in p.output) == 1, p.text()[-3000:]
    assert world.plain_elsewhere.count("/f") == 4 and world.plain_mirror.count("/f") == 3


def test_a_client_outside_the_allowlist_gets_403_that_says_why_and_no_upstream_is_asked(world, proxy, htpasswd,
                                                                                      tmp_path, pki):
    # The proxy listens on another address than 127.0.0.1, and lets only 127.0.0.1 in.
    p = proxy(world.rules(), "--listen-host", LISTEN, "--set", "client_allow=127.0.0.1/32",
              "--set", f"proxyauth=@{htpasswd}")
    url = f"http://{LISTEN}:{p.port}"
    assert f"Mirrorgate proxy listening on {LISTEN}:{p.port}" in p.text()
    explanation = (f"Mirrorgate refused this request: the client address {OUTSIDER} may not use this proxy.\n"
                   f"The proxy's operator chooses the networks that may use it (option client_allow, a list of "
                   f"CIDRs); ask them to add {OUTSIDER} or its network.\n")

    for name, target in world.targets().items():
        # Good credentials do not help, and no credentials get no 407: the allowlist comes first.
        for auth in (ALICE, None):
            if target.startswith("https:"):
                answer = raw_connect((LISTEN, p.port), authority(target), OUTSIDER, auth)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 403 "), (name, answer)
                assert body.decode() == explanation
            else:
                out = curl("--interface", OUTSIDER, "--proxy", url, *(["--proxy-user", ":".join(auth)] if auth else []),
                           "-w", "%{http_code} %{content_type}", target)
                assert out.returncode == 0, out.stderr
                assert out.stdout == explanation + "403 text/plain; charset=utf-8", name

    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    out = curl("-o", "/dev/null", "-w", "%{http_connect}", "--interface", OUTSIDER, "--proxy", url,
               "--cacert", str(bundle), world.origin.url + "f")
    assert out.returncode != 0 and out.stdout == "403"
    wait_for_line(p, f"Refused CONNECT {authority(world.origin.url)} from {OUTSIDER}: not in client_allow")

    assert world.upstream_hits() == 0

    # From an address in the list, the same proxy serves.
    out = curl("--interface", "127.0.0.1", "--proxy", url, "--proxy-user", ":".join(ALICE), "--cacert", str(bundle),
               world.origin.url + "f")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from mirror"


@pytest.mark.parametrize("args, message", [
    (["--set", "client_allow=10.1.2.3/8"],
     "mirrorgate: client_allow: '10.1.2.3/8' has host bits set: write '10.0.0.0/8' for the network "
     "or '10.1.2.3' for the single address"),
    (["--set", "client_allow=10.0.0.0/8,office"],
     "mirrorgate: client_allow: 'office' is not an IP address or network (CIDR such as 10.0.0.0/8)"),
    (["--set", "client_allow"],
     "mirrorgate: client_allow: no network given, so no client could use the proxy "
     "(to let every address in, give 0.0.0.0/0,::/0)"),
    (["--set", "proxyauth_cache=-1"], "mirrorgate: proxyauth_cache: -1 is negative; give seconds, or 0 for no cache"),
    (["--set", "proxyauth=@{missing}"], "mirrorgate: Could not open htpasswd file: {missing}"),
])
def test_bad_access_options_stop_start_up_with_one_line(args, message, tmp_path):
    missing = tmp_path / "no-such-htpasswd"
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nprofiles: {test: fakes}\ndefault_profile: test\nrules: []\n")

    out = run_to_exit(rules, tmp_path / "conf", *(a.format(missing=missing) for a in args))

    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == message.format(missing=missing)
    assert "Traceback" not in out.stdout + out.stderr
