"""Only rule hosts are decrypted; everything else passes through untouched and streams."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import client_context
from tests.e2e.test_fallback import header, rules_yaml
from tests.support.proxy import clean_env

pytestmark = pytest.mark.e2e


def test_other_hosts_pass_through_as_a_raw_tunnel(fake, proxy, client, pki):
    origin, mirror, elsewhere = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3"), fake("elsewhere", "127.0.0.5")
    origin.serve("/f", b"origin")
    mirror.serve("/f", b"mirror")
    elsewhere.serve("/page", b"untouched")
    p = proxy(rules_yaml(origin.url, [mirror.url]))
    # This client trusts only the fakes' own CA, never Mirrorgate's.
    c = client(p, trust_proxy_ca=False)

    r = c.get(elsewhere.url + "page")
    assert r.status_code == 200 and r.content == b"untouched"
    assert "x-mirrorgate" not in r.headers

    # The same client cannot talk to a rule host: that one is decrypted by the proxy.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        c.get(origin.url + "f")


def test_plain_http_to_other_hosts_is_streamed(fake, proxy, client):
    origin = fake("origin", "127.0.0.2")
    plain = fake("plain", "127.0.0.6", secure=False)
    gate = plain.gate()
    plain.two_halves("/big", b"first half|", b"second half", gate)
    p = proxy(rules_yaml(origin.url, []))

    with client(p).stream("GET", plain.url + "big", timeout=10) as r:
        chunks = r.iter_raw()
        # Buffered, the first half would not arrive until the gate opens: it never would.
        assert next(chunks) == b"first half|"
        gate.open()
        assert b"".join(chunks) == b"second half"


def test_routed_responses_are_streamed_too(fake, proxy, client):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    gate = mirror.gate()
    mirror.two_halves("/big", b"first half|", b"second half", gate)
    p = proxy(rules_yaml(origin.url, [mirror.url]))

    with client(p).stream("GET", origin.url + "big", timeout=10) as r:
        assert header(r)["upstream"] == f"mirror:{mirror.url}"
        chunks = r.iter_raw()
        assert next(chunks) == b"first half|"
        gate.open()
        assert b"".join(chunks) == b"second half"


def test_an_h2_client_is_routed_as_well(fake, proxy, pki, tmp_path):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/f", b"mirror")
    p = proxy(rules_yaml(origin.url, [mirror.url]))
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")

    # curl offers h2 first in ALPN; httpx offers http/1.1 first and so never gets h2.
    out = subprocess.run(["curl", "-sS", "--http2", "--proxy", p.url, "--cacert", str(bundle),
                          "-w", "\n%{http_version}", origin.url + "f"],
                         capture_output=True, text=True, timeout=30, env=clean_env())

    assert out.returncode == 0, out.stderr
    assert out.stdout == "mirror\n2"


def test_trusting_only_the_proxy_ca_and_the_fakes_ca_is_enough(pki, proxy, fake):
    origin, mirror = fake("origin", "127.0.0.2"), fake("mirror", "127.0.0.3")
    mirror.serve("/f", b"mirror")
    p = proxy(rules_yaml(origin.url, [mirror.url]))
    with httpx.Client(proxy=p.url, verify=client_context(p.ca), trust_env=False, timeout=30) as c:
        assert c.get(origin.url + "f").content == b"mirror"
