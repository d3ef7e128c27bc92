"""`./run_proxy.sh env`: the pure generator of a client's set-up, every output format and
its quoting, and the CA bundle it keeps next to the CA."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mirrorgate import clientenv
from mirrorgate.clientenv import (ClientSetup, Proxy, SetupError, bundle_is_current, bundle_text, ca_fingerprint,
                                  ca_install, docker_daemon_json, environment, fish_quote, java_non_proxy_hosts,
                                  load_setup, maven_settings_xml, no_proxy_hosts, parse_proxy, ps_quote, render,
                                  systemd_proxy_dropin, systemd_quote, truststore_commands)

ROOT = Path(__file__).resolve().parents[2]
# A path that every quoting rule has to get right: spaces, both quotes, $, `, \ and ;.
AWKWARD = "/srv/my certs/it's \"$HOME\" `id` \\ ;x.pem"
BUNDLE_VARS = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
               "CARGO_HTTP_CAINFO"]
PROXY_VARS = ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"]


def setup(proxy: str = "http://gateway.corp.example:8080", ca: str = "/etc/mirrorgate/ca.pem",
          bundle: str = "/etc/mirrorgate/bundle.pem", no_proxy: tuple[str, ...] = clientenv.DEFAULT_NO_PROXY
          ) -> ClientSetup:
    return ClientSetup(parse_proxy(proxy), ca, bundle, "ab" * 32, no_proxy)


# ---- inputs ------------------------------------------------------------------------------


def test_proxy_url_is_normalised_with_an_explicit_port():
    assert parse_proxy("http://gateway.corp.example:3128") == Proxy("http://gateway.corp.example:3128",
                                                                    "gateway.corp.example", 3128)
    # curl would assume 1080 for a proxy without a port; Mirrorgate's default is 8080.
    assert parse_proxy("http://gw/").url == "http://gw:8080"
    assert parse_proxy("http://[::1]:8080").url == "http://[::1]:8080"
    assert parse_proxy("http://[::1]:8080").host == "::1"


def test_proxy_credentials_stay_encoded_in_the_url_and_decoded_for_settings_files():
    p = parse_proxy("http://bob:p%40ss%3Aw@gw:8080")
    assert p.url == "http://bob:p%40ss%3Aw@gw:8080"
    assert (p.username, p.password) == ("bob", "p@ss:w")


@pytest.mark.parametrize("url, problem", [
    ("https://gw:8080", "must start with http://"),
    ("socks5://gw:1080", "must start with http://"),
    ("gw:8080", "must start with http://"),
    ("http://gw:8080/path", "only http://"),
    ("http://gw:8080/?q=1", "only http://"),
    ("http://:8080", "no host"),
    ("http://gw:99999", "out of range"),
    ("http://gw:8080\n", "control character"),
])
def test_bad_proxy_urls_are_refused_with_the_reason(url, problem):
    with pytest.raises(SetupError, match=re.escape(problem)):
        parse_proxy(url)


def test_no_proxy_keeps_loopback_first_and_adds_each_host_once():
    assert no_proxy_hosts() == ("localhost", "127.0.0.1", "::1")
    assert no_proxy_hosts([".corp.example,10.0.0.0/8", " nexus.corp ", "localhost", ",,"]) == (
        "localhost", "127.0.0.1", "::1", ".corp.example", "10.0.0.0/8", "nexus.corp")


def test_no_proxy_hosts_with_white_space_are_refused():
    with pytest.raises(SetupError, match="white space"):
        no_proxy_hosts(["a b"])


def test_fingerprint_is_the_sha256_of_the_certificate_der(pki):
    pem = pki.ca.read_text()
    expected = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()
    assert ca_fingerprint(pem) == expected
    # Text around the certificate (a bundle, comments) does not change it.
    assert ca_fingerprint("# Mirrorgate CA\n" + pem + pki.cert.read_text()) == expected
    with pytest.raises(SetupError, match="no PEM certificate"):
        ca_fingerprint("not a certificate")


def test_bundle_is_the_roots_then_the_ca():
    assert bundle_text("ROOT-A\nROOT-B", "CA\n") == "ROOT-A\nROOT-B\nCA\n"
    assert bundle_text("ROOT\n\n", "CA") == "ROOT\nCA\n"
    assert bundle_is_current("ROOT\nCA-PEM\n", "CA-PEM\n")
    assert not bundle_is_current("ROOT\nOLD-CA\n", "CA-PEM\n")


# ---- what to set -------------------------------------------------------------------------


def test_the_environment_names_the_bundle_where_a_variable_replaces_the_trust_store():
    env = environment(setup(no_proxy=("localhost", "127.0.0.1", "::1", ".corp")))
    assert {k: env[k] for k in PROXY_VARS} == dict.fromkeys(PROXY_VARS, "http://gateway.corp.example:8080")
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1,.corp"
    assert {k: env[k] for k in BUNDLE_VARS} == dict.fromkeys(BUNDLE_VARS, "/etc/mirrorgate/bundle.pem")
    # Node.js adds this one to its own roots, so the CA alone is right.
    assert env["NODE_EXTRA_CA_CERTS"] == "/etc/mirrorgate/ca.pem"
    assert len(env) == 13


def test_java_non_proxy_hosts_use_wildcards_and_drop_cidr_blocks():
    assert java_non_proxy_hosts(["localhost", "127.0.0.1", ".corp.example", "10.0.0.0/8", "nexus"]) == (
        "localhost|127.0.0.1|*.corp.example|nexus")


def test_maven_settings_name_the_proxy_for_both_schemes_as_the_readme_does():
    xml = maven_settings_xml(setup("http://127.0.0.1:8080"))
    readme = (ROOT / "README.md").read_text()
    shipped = re.search(r"```xml\n(<settings>.*?</settings>)\n```", readme, re.S).group(1)

    def proxies(text: str) -> list[dict[str, str]]:
        return [{child.tag: child.text for child in p if child.tag != "nonProxyHosts"}
                for p in ET.fromstring(text).iter("proxy")]

    assert proxies(xml) == proxies(shipped)
    assert [p.findtext("nonProxyHosts") for p in ET.fromstring(xml).iter("proxy")] == ["localhost|127.0.0.1|::1"] * 2


def test_maven_settings_carry_decoded_credentials_escaped_for_xml():
    xml = maven_settings_xml(setup("http://bob:%3Cp%26w%3E@gw:3128"))
    p = ET.fromstring(xml).find("proxies/proxy")
    assert (p.findtext("host"), p.findtext("port"), p.findtext("username"), p.findtext("password")) == (
        "gw", "3128", "bob", "<p&w>")


def test_truststore_commands_quote_the_ca_path():
    mkdir, first, second = truststore_commands(setup(ca=AWKWARD))
    assert mkdir == "mkdir -p ~/.m2"
    assert shlex.split(second) == ["keytool", "-importcert", "-noprompt", "-alias", "mirrorgate", "-file", AWKWARD,
                                   "-keystore", "~/.m2/mirrorgate-truststore.p12", "-storetype", "PKCS12",
                                   "-storepass", "changeit"]
    assert shlex.split(first)[:5] == ["keytool", "-importkeystore", "-noprompt", "-srckeystore",
                                      "$JAVA_HOME/lib/security/cacerts"]
    readme = (ROOT / "README.md").read_text()
    assert f'export MAVEN_OPTS="{clientenv.maven_opts()}"' in readme


def test_docker_daemon_json_and_systemd_drop_in():
    s = setup("http://bob:p%40ss@gw:8080")
    assert docker_daemon_json(s) == {"proxies": {"http-proxy": "http://bob:p%40ss@gw:8080",
                                                 "https-proxy": "http://bob:p%40ss@gw:8080",
                                                 "no-proxy": "localhost,127.0.0.1,::1"}}
    # % starts a specifier in unit files: the encoded password must survive as %%40.
    assert systemd_proxy_dropin(s) == (
        "[Service]\n"
        'Environment="HTTP_PROXY=http://bob:p%%40ss@gw:8080"\n'
        'Environment="HTTPS_PROXY=http://bob:p%%40ss@gw:8080"\n'
        'Environment="NO_PROXY=localhost,127.0.0.1,::1"\n')
    assert systemd_quote('A=b"c\\d') == '"A=b\\"c\\\\d"'


def test_ca_install_steps_for_each_system():
    steps = ca_install(setup(ca="/srv/my ca.pem"))
    assert steps == {
        "debian": ["sudo cp '/srv/my ca.pem' /usr/local/share/ca-certificates/mirrorgate.crt",
                   "sudo update-ca-certificates"],
        "rhel": ["sudo cp '/srv/my ca.pem' /etc/pki/ca-trust/source/anchors/mirrorgate.pem", "sudo update-ca-trust"],
        "macos": ["sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain "
                  "'/srv/my ca.pem'"],
        "windows": ["Import-Certificate -FilePath '/srv/my ca.pem' -CertStoreLocation Cert:\\LocalMachine\\Root",
                    "certutil -addstore -f Root '/srv/my ca.pem'"],
    }


# ---- formats -----------------------------------------------------------------------------


def run_sh(script: str, *names: str) -> list[str]:
    """Evaluates `script` in a real POSIX shell and returns the named variables."""
    show = "".join(f'printf "%s\\n" "${name}"; ' for name in names)
    out = subprocess.run(["sh", "-c", 'eval "$1"; ' + show, "sh", script], capture_output=True, text=True,
                         timeout=30, env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"})
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out.stdout.splitlines()


def test_sh_output_is_eval_able_and_round_trips_awkward_paths():
    s = setup("http://bob:p%40ss@gw:8080", ca=AWKWARD, bundle=AWKWARD + ".bundle",
              no_proxy=("localhost", "127.0.0.1", "::1", ".corp"))
    text = render(s, "sh")
    assert run_sh(text, "HTTPS_PROXY", "http_proxy", "NO_PROXY", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS",
                  "CARGO_HTTP_CAINFO") == [
        "http://bob:p%40ss@gw:8080", "http://bob:p%40ss@gw:8080", "localhost,127.0.0.1,::1,.corp",
        AWKWARD + ".bundle", AWKWARD, AWKWARD + ".bundle"]
    assert subprocess.run(["sh", "-n"], input=text, text=True, timeout=30).returncode == 0


def test_sh_output_runs_nothing_but_exports():
    # Only `export` lines, comments and blank lines: eval must not run the one-time steps.
    for line in render(setup(ca=AWKWARD), "sh").splitlines():
        assert line == "" or line.startswith("#") or re.match(r"export [A-Za-z_]+=", line), line


def test_sh_output_explains_the_bundle_and_shows_the_one_time_steps():
    text = render(setup(), "sh")
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "replace a client's whole trust store" in comments
    assert "CA SHA-256:     " + "ab" * 32 in comments
    for needle in ["<proxy><id>mirrorgate-https</id>", "keytool -importcert", "export MAVEN_OPTS=",
                   'Acquire::http::Proxy "http://gateway.corp.example:8080";', '"https-proxy"',
                   "update-ca-certificates", "update-ca-trust", "add-trusted-cert", "certutil -addstore -f Root",
                   "Import-Certificate", "Cert:\\LocalMachine\\Root", "-Dhttps.proxyHost=gateway.corp.example"]:
        assert needle in comments, needle


def test_fish_quoting():
    assert fish_quote("a b") == "'a b'"
    assert fish_quote("it's \\ $x") == "'it\\'s \\\\ $x'"
    text = render(setup(ca=AWKWARD), "fish")
    assert f"set -gx NODE_EXTRA_CA_CERTS {fish_quote(AWKWARD)}" in text.splitlines()
    assert "set -gx https_proxy 'http://gateway.corp.example:8080'" in text.splitlines()


def test_powershell_quoting_doubles_every_single_quote_powershell_knows():
    assert ps_quote("C:\\Program Files\\ca.pem") == "'C:\\Program Files\\ca.pem'"
    assert ps_quote("it's $env:X") == "'it''s $env:X'"
    # PowerShell also ends a single-quoted string at the typographic quotes U+2018-U+201B.
    assert ps_quote("a\u2018b\u2019c\u201ad\u201be") == "'a\u2018\u2018b\u2019\u2019c\u201a\u201ad\u201b\u201be'"


def test_powershell_output_sets_each_variable_once():
    text = render(setup(ca="C:\\certs\\it's.pem", bundle="C:\\certs\\bundle.pem"), "powershell")
    assigned = re.findall(r"^\$env:([A-Z_]+) = (.*)$", text, re.M)
    names = [n for n, _ in assigned]
    # Windows environment names ignore case: https_proxy is HTTPS_PROXY.
    assert sorted(names) == sorted({n.upper() for n in environment(setup())})
    values = dict(assigned)
    assert values["NODE_EXTRA_CA_CERTS"] == "'C:\\certs\\it''s.pem'"
    assert values["SSL_CERT_FILE"] == "'C:\\certs\\bundle.pem'"
    assert values["NO_PROXY"] == "'localhost,127.0.0.1,::1'"
    for line in text.splitlines():
        assert line == "" or line.startswith("#") or line.startswith("$env:"), line
    assert "#    Import-Certificate -FilePath 'C:\\certs\\it''s.pem' -CertStoreLocation Cert:\\LocalMachine\\Root" in text


def test_json_output_is_machine_readable():
    s = setup(ca=AWKWARD)
    data = json.loads(render(s, "json"))
    assert data["proxy"] == "http://gateway.corp.example:8080"
    assert (data["ca"], data["ca_sha256"], data["bundle"]) == (AWKWARD, "ab" * 32, "/etc/mirrorgate/bundle.pem")
    assert data["no_proxy"] == ["localhost", "127.0.0.1", "::1"]
    assert data["env"] == environment(s)
    assert data["docker"]["daemon_json"] == docker_daemon_json(s)
    assert data["docker"]["systemd_dropin"] == systemd_proxy_dropin(s)
    assert data["ca_install"] == ca_install(s)
    assert data["apt"] == {"path": "/etc/apt/apt.conf.d/95mirrorgate",
                           "line": 'Acquire::http::Proxy "http://gateway.corp.example:8080";'}
    ET.fromstring(data["maven"]["settings_xml"])
    assert data["maven"]["truststore_commands"] == truststore_commands(s)


# ---- the files on this machine -----------------------------------------------------------


def confdir_with_ca(tmp_path: Path, pki) -> Path:
    confdir = tmp_path / "conf dir"
    confdir.mkdir()
    (confdir / clientenv.CA_NAME).write_text(pki.ca.read_text())
    return confdir


def test_load_setup_writes_the_bundle_once_and_renews_a_stale_one(tmp_path, pki, capsys):
    confdir = confdir_with_ca(tmp_path, pki)
    bundle = confdir / clientenv.BUNDLE_NAME

    s = load_setup("http://gw:8080", str(confdir), [".corp"])

    assert (s.ca, s.bundle) == (str(confdir / clientenv.CA_NAME), str(bundle))
    assert s.ca_sha256 == ca_fingerprint(pki.ca.read_text())
    assert s.no_proxy == ("localhost", "127.0.0.1", "::1", ".corp")
    roots = clientenv.system_roots().read_text()
    assert bundle.read_text() == bundle_text(roots, pki.ca.read_text())
    assert bundle.stat().st_mode & 0o777 == 0o644
    assert "wrote the CA bundle" in capsys.readouterr().err

    bundle.write_text("kept\n" + pki.ca.read_text())
    load_setup("http://gw:8080", str(confdir), [])
    assert bundle.read_text().startswith("kept\n")
    assert capsys.readouterr().err == ""

    bundle.write_text("an older CA\n")
    load_setup("http://gw:8080", str(confdir), [])
    assert bundle.read_text() == bundle_text(roots, pki.ca.read_text())
    assert [p.name for p in confdir.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_an_exact_bundle_follows_the_system_roots_and_is_left_alone_when_it_already_does(tmp_path, pki):
    ca = pki.ca.read_text()
    old_roots, new_roots = tmp_path / "old.pem", tmp_path / "new.pem"
    old_roots.write_text("# an older root\n")
    new_roots.write_text("# a root added since\n")
    bundle = tmp_path / clientenv.BUNDLE_NAME
    assert clientenv.ensure_bundle(ca, bundle, old_roots, exact=True)

    # Holds the CA, so enough for a client; the proxy's start still brings in new roots.
    assert not clientenv.ensure_bundle(ca, bundle, new_roots)
    assert clientenv.ensure_bundle(ca, bundle, new_roots, exact=True)
    assert bundle.read_text() == bundle_text("# a root added since\n", ca)
    inode = bundle.stat().st_ino
    assert not clientenv.ensure_bundle(ca, bundle, new_roots, exact=True)
    assert bundle.stat().st_ino == inode


def test_processes_starting_together_never_see_half_a_bundle(tmp_path, pki):
    # Several proxies on one confdir each write the bundle at start: every write lands
    # whole under its final name, and none fails because another moved its file away.
    ca = pki.ca.read_text()
    bundle = tmp_path / clientenv.BUNDLE_NAME
    roots = []
    for i in range(8):
        roots.append(tmp_path / f"roots-{i}.pem")
        roots[-1].write_text(f"# root set {i}\n" * 5000)
    expected = {bundle_text(r.read_text(), ca) for r in roots}
    seen: set[str] = set()

    def writer(r):
        for _ in range(20):
            clientenv.ensure_bundle(ca, bundle, r, exact=True)
            seen.add(bundle.read_text())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, roots))  # re-raises any writer's error
    assert seen <= expected
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("roots-")) == [clientenv.BUNDLE_NAME]


def test_the_banner_writes_the_bundle_beside_the_ca_and_keeps_a_current_one(tmp_path, pki, capsys):
    from mitmproxy.test import taddons

    from addons.banner import Banner

    class ProxyServer:  # the listening address the banner prints
        def listen_addrs(self):
            return [("127.0.0.1", 8080)]

    confdir = confdir_with_ca(tmp_path, pki)
    bundle = confdir / clientenv.BUNDLE_NAME
    with taddons.context() as tctx:
        tctx.master.addons.add(ProxyServer())
        tctx.options.update(confdir=str(confdir))
        Banner().running()
        assert bundle.read_text() == bundle_text(clientenv.system_roots().read_text(), pki.ca.read_text())
        inode = bundle.stat().st_ino
        Banner().running()
        assert bundle.stat().st_ino == inode
    assert f"CA bundle (system roots + that CA):   {bundle}" in capsys.readouterr().out
    assert [p.name for p in confdir.iterdir() if p.name.startswith(".")] == []


def test_load_setup_without_a_ca_says_how_to_get_one(tmp_path):
    with pytest.raises(SetupError, match=r"no CA certificate at .*mitmproxy-ca-cert.pem: start the proxy once"):
        load_setup("http://gw:8080", str(tmp_path), [])


def test_load_setup_reports_a_bundle_it_cannot_use(tmp_path, pki):
    confdir = confdir_with_ca(tmp_path, pki)
    (confdir / clientenv.BUNDLE_NAME).mkdir()
    with pytest.raises(SetupError, match="CA bundle"):
        load_setup("http://gw:8080", str(confdir), [])


@pytest.mark.parametrize("fmt", clientenv.FORMATS)
@pytest.mark.parametrize("breaker", ["\n", "\r", "\x85", "\u2028"])
def test_no_format_renders_a_value_that_would_break_a_line(fmt, breaker):
    with pytest.raises(SetupError, match="control character"):
        render(setup(ca=f"/ca{breaker}touch /tmp/owned"), fmt)


def test_load_setup_refuses_a_confdir_with_a_newline(tmp_path):
    with pytest.raises(SetupError, match="control character"):
        load_setup("http://gw:8080", str(tmp_path) + "\nrm -rf x", [])


def test_main_prints_the_chosen_format_and_fails_clearly(tmp_path, pki, capsys):
    confdir = confdir_with_ca(tmp_path, pki)
    assert clientenv.main(["--confdir", str(confdir), "--format", "json", "--proxy", "http://gw:3128"]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["HTTPS_PROXY"] == "http://gw:3128"

    assert clientenv.main(["--confdir", str(tmp_path / "none")]) == 1
    out = capsys.readouterr()
    assert out.out == "false\n" and out.err.startswith("mirrorgate env: no CA certificate at ")

    assert clientenv.main(["--confdir", str(tmp_path / "it's"), "--format", "powershell"]) == 1
    assert capsys.readouterr().out.startswith("throw 'mirrorgate env: no CA certificate at ")
    assert clientenv.main(["--confdir", str(tmp_path / "none"), "--format", "json"]) == 1
    assert capsys.readouterr().out == ""

    assert clientenv.main(["--confdir", str(confdir), "--proxy", "https://gw"]) == 1
    assert "must start with http://" in capsys.readouterr().err


def test_a_failing_env_stops_a_set_e_script_that_evals_it(tmp_path):
    script = f'set -e; eval "$("{sys.executable}" -m mirrorgate.clientenv --confdir {tmp_path}/none)"; echo after'
    out = subprocess.run(["sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (1, "")
    assert "mirrorgate env: no CA certificate" in out.stderr


def test_system_roots_is_a_file():
    assert clientenv.system_roots().is_file()


def test_the_module_needs_only_the_standard_library():
    code = "import sys, mirrorgate.clientenv; print(sorted(m for m in ('mitmproxy', 'yaml', 'aiohttp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
