"""What a client machine needs to use Mirrorgate, printed by one command:

    ./run_proxy.sh env [--proxy URL] [--confdir DIR] [--no-proxy HOST,…] [--format sh|fish|powershell|json]
    python3 -m mirrorgate.clientenv …      (the same, from a checkout; needs no venv)

It needs no running proxy: it reads the CA that the proxy made in its confdir and writes
the CA bundle beside it if that is missing or stale. Everything else is generated from
plain data (proxy URL, paths, format) by the pure functions below. See
docs/client-setup.md.

This module uses the standard library only, so that a client machine can run it with
any Python 3.11 and without installing mitmproxy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import ssl
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape

CA_NAME = "mitmproxy-ca-cert.pem"
BUNDLE_NAME = "mirrorgate-ca-bundle.pem"  # the name addons/banner.py writes too
DEFAULT_PROXY = "http://127.0.0.1:8080"
DEFAULT_CONFDIR = "~/.mitmproxy"
DEFAULT_NO_PROXY = ("localhost", "127.0.0.1", "::1")
FORMATS = ("sh", "fish", "powershell", "json")

# Where distributions keep the system's trust store as one file, for Pythons whose
# OpenSSL names none (python.org builds on macOS, some venvs).
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora, CentOS
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, BSDs
)
PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)
# Also C1 controls and Unicode line separators: some editors and shells break lines there.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Installed names of the CA in system stores; update-ca-certificates takes only *.crt.
DEBIAN_ANCHOR = "/usr/local/share/ca-certificates/mirrorgate.crt"
RHEL_ANCHOR = "/etc/pki/ca-trust/source/anchors/mirrorgate.pem"
MACOS_KEYCHAIN = "/Library/Keychains/System.keychain"
APT_CONF = "/etc/apt/apt.conf.d/95mirrorgate"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
DOCKER_DROPIN = "/etc/systemd/system/docker.service.d/http-proxy.conf"
TRUSTSTORE = ".m2/mirrorgate-truststore.p12"  # below the user's home


class SetupError(ValueError):
    """An input that cannot make a working set-up; the message says which and why."""


@dataclass(frozen=True)
class Proxy:
    url: str  # normalised: http://[user[:password]@]host:port
    host: str  # without IPv6 brackets
    port: int
    username: str | None = None  # percent-decoded, for files that take them apart
    password: str | None = None


@dataclass(frozen=True)
class ClientSetup:
    proxy: Proxy
    ca: str  # Mirrorgate's CA certificate (PEM)
    bundle: str  # the system roots plus that CA (PEM)
    ca_sha256: str  # hex SHA-256 of the CA's DER bytes, as `openssl x509 -fingerprint` shows it
    no_proxy: tuple[str, ...] = DEFAULT_NO_PROXY


# ---- inputs ------------------------------------------------------------------------------


def plain(value: str, what: str) -> str:
    """`value` unless it holds a control character: a newline in a path or URL would end
    a comment or a quoted word in the generated script and run the rest."""
    if CONTROL.search(value):
        raise SetupError(f"{what} {value!r} contains a control character")
    return value


def parse_proxy(url: str) -> Proxy:
    """The proxy as clients name it. Mirrorgate's port speaks plain HTTP for both
    http:// and https:// requests (the latter as CONNECT tunnels), so the URL is http://."""
    plain(url, "proxy URL")
    parts = urlsplit(url.strip())
    if parts.scheme != "http":
        raise SetupError(f"proxy URL {url!r}: must start with http:// (Mirrorgate's port is plain HTTP, "
                         "also for https:// requests)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SetupError(f"proxy URL {url!r}: only http://[USER:PASSWORD@]HOST:PORT is allowed")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise SetupError(f"proxy URL {url!r}: {e}") from None
    if not host:
        raise SetupError(f"proxy URL {url!r}: no host")
    # Clients disagree on a missing port (curl assumes 1080), so always name it.
    port = port or 8080
    userinfo = parts.netloc.rpartition("@")[0]
    shown_host = f"[{host}]" if ":" in host else host
    normal = f"http://{userinfo + '@' if userinfo else ''}{shown_host}:{port}"
    return Proxy(normal, host, port,
                 unquote(parts.username) if parts.username is not None else None,
                 unquote(parts.password) if parts.password is not None else None)


def no_proxy_hosts(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Loopback first, then the caller's hosts (each item may be comma-separated), once each."""
    hosts = list(DEFAULT_NO_PROXY)
    for item in extra:
        for host in item.split(","):
            host = host.strip()
            if not host:
                continue
            if re.search(r"\s", host) or CONTROL.search(host):
                raise SetupError(f"no-proxy host {host!r} contains white space or a control character")
            if host not in hosts:
                hosts.append(host)
    return tuple(hosts)


def ca_fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate's DER bytes, lower-case hex: what
    `sed '/-----/d' ca.pem | base64 -d | sha256sum` prints on a client."""
    m = PEM_CERT.search(pem)
    if not m:
        raise SetupError("no PEM certificate found")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()


def bundle_text(roots_pem: str, ca_pem: str) -> str:
    """The system roots plus Mirrorgate's CA. Variables such as SSL_CERT_FILE replace a
    client's whole trust store, so pointing them at the CA alone would break every host
    that passes through untouched."""
    return roots_pem.rstrip("\n") + "\n" + ca_pem.rstrip("\n") + "\n"


def bundle_is_current(bundle_pem: str, ca_pem: str) -> bool:
    return ca_pem.strip() in bundle_pem


# ---- what to set -------------------------------------------------------------------------

COMMENT_PROXY = ("The proxy, for every client that reads the environment. Both spellings: curl and wget "
                 "read only the lower-case http_proxy; Go, Docker and others read the upper case.")
COMMENT_NO_PROXY = "Hosts reached directly, never through the proxy."
COMMENT_BUNDLE = ("These variables replace a client's whole trust store rather than add to it, so they "
                  "name the bundle (the system roots plus Mirrorgate's CA), not the CA alone: only the "
                  "registry hosts that the rules name are decrypted and signed by Mirrorgate's CA; every "
                  "other host keeps its own certificate, which the system roots verify. SSL_CERT_FILE: "
                  "OpenSSL and Go (Python, Ruby, uv, go, conda); REQUESTS_CA_BUNDLE: Python requests; "
                  "PIP_CERT: pip; CURL_CA_BUNDLE: curl; GIT_SSL_CAINFO: git; CARGO_HTTP_CAINFO: cargo.")
COMMENT_NODE = ("Node.js (npm, yarn, pnpm) adds NODE_EXTRA_CA_CERTS to its built-in roots, so it names "
                "the CA alone.")


def env_groups(s: ClientSetup) -> list[tuple[str, list[tuple[str, str]]]]:
    """The variables to export, in groups that share one explanation."""
    proxy, no_proxy = s.proxy.url, ",".join(s.no_proxy)
    return [
        (COMMENT_PROXY, [("HTTPS_PROXY", proxy), ("HTTP_PROXY", proxy), ("https_proxy", proxy), ("http_proxy", proxy)]),
        (COMMENT_NO_PROXY, [("NO_PROXY", no_proxy), ("no_proxy", no_proxy)]),
        (COMMENT_BUNDLE, [(name, s.bundle) for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                                                         "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "CARGO_HTTP_CAINFO")]),
        (COMMENT_NODE, [("NODE_EXTRA_CA_CERTS", s.ca)]),
    ]


def environment(s: ClientSetup) -> dict[str, str]:
    return {name: value for _, pairs in env_groups(s) for name, value in pairs}


def java_non_proxy_hosts(no_proxy: Iterable[str]) -> str:
    """NO_PROXY in Java's `a|*.b` syntax. CIDR blocks have no Java equivalent and are left out."""
    out = []
    for host in no_proxy:
        if "/" in host:
            continue
        out.append("*" + host if host.startswith(".") else host)
    return "|".join(out)


def maven_settings_xml(s: ClientSetup) -> str:
    """The `<proxies>` of ~/.m2/settings.xml: Maven ignores HTTPS_PROXY/HTTP_PROXY."""
    p = s.proxy
    common = (f"<host>{xml_escape(p.host)}</host><port>{p.port}</port>"
              + (f"<username>{xml_escape(p.username)}</username>" if p.username else "")
              + (f"<password>{xml_escape(p.password)}</password>" if p.password else "")
              + f"<nonProxyHosts>{xml_escape(java_non_proxy_hosts(s.no_proxy))}</nonProxyHosts>")
    return "\n".join([
        "<settings>",
        "  <proxies>",
        "    <!-- <protocol> is the scheme of the repositories an entry serves; Mirrorgate's port is plain "
        "HTTP for both. -->",
        f"    <proxy><id>mirrorgate-https</id><active>true</active><protocol>https</protocol>{common}</proxy>",
        f"    <proxy><id>mirrorgate-http</id><active>true</active><protocol>http</protocol>{common}</proxy>",
        "  </proxies>",
        "</settings>",
    ])


def truststore_commands(s: ClientSetup) -> list[str]:
    """POSIX shell: a Java truststore holding the JDK's roots plus Mirrorgate's CA.
    javax.net.ssl.trustStore replaces Java's roots, hence the copy of `cacerts` first."""
    return [
        "mkdir -p ~/.m2",  # keytool does not create it, and Maven only does on its first run
        'keytool -importkeystore -noprompt -srckeystore "$JAVA_HOME/lib/security/cacerts" -srcstorepass changeit '
        f"-destkeystore ~/{TRUSTSTORE} -deststoretype PKCS12 -deststorepass changeit",
        f"keytool -importcert -noprompt -alias mirrorgate -file {shlex.quote(s.ca)} "
        f"-keystore ~/{TRUSTSTORE} -storetype PKCS12 -storepass changeit",
    ]


def maven_opts() -> str:
    """MAVEN_OPTS as POSIX shell sets it (after truststore_commands)."""
    return f'-Djavax.net.ssl.trustStore=$HOME/{TRUSTSTORE} -Djavax.net.ssl.trustStorePassword=changeit'


def jvm_proxy_properties(s: ClientSetup) -> str:
    """System properties for JVM tools other than Maven (Gradle: systemProp.* in gradle.properties)."""
    p, non = s.proxy, java_non_proxy_hosts(s.no_proxy)
    return (f"-Dhttps.proxyHost={p.host} -Dhttps.proxyPort={p.port} -Dhttp.proxyHost={p.host} "
            f"-Dhttp.proxyPort={p.port} -Dhttp.nonProxyHosts={non}")


def apt_line(s: ClientSetup) -> str:
    """apt's https:// sources take this too unless Acquire::https::Proxy says otherwise."""
    return f'Acquire::http::Proxy "{s.proxy.url}";'


def docker_daemon_json(s: ClientSetup) -> dict:
    """`/etc/docker/daemon.json` (Docker Engine 23 and later): the daemon pulls images
    with its own proxy settings, not the shell's."""
    return {"proxies": {"http-proxy": s.proxy.url, "https-proxy": s.proxy.url, "no-proxy": ",".join(s.no_proxy)}}


def systemd_quote(assignment: str) -> str:
    """One word of a unit file's Environment=: `%` starts a specifier, `"`/`\\` escape."""
    return '"' + assignment.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def systemd_proxy_dropin(s: ClientSetup) -> str:
    """A drop-in that gives a daemon (docker, containerd) the proxy."""
    env = [("HTTP_PROXY", s.proxy.url), ("HTTPS_PROXY", s.proxy.url), ("NO_PROXY", ",".join(s.no_proxy))]
    return "[Service]\n" + "".join(f"Environment={systemd_quote(f'{k}={v}')}\n" for k, v in env)


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string. PowerShell also takes the typographic single
    quotes (U+2018-U+201B) as quotes, so each is doubled like the ASCII one."""
    return "'" + re.sub("(['\u2018\u2019\u201a\u201b])", r"\1\1", value) + "'"


def fish_quote(value: str) -> str:
    """A fish single-quoted string: only \\ and ' are special inside."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ca_install(s: ClientSetup) -> dict[str, list[str]]:
    """Commands that make each OS trust the CA system-wide (run as an administrator)."""
    ca = shlex.quote(s.ca)
    return {
        "debian": [f"sudo cp {ca} {DEBIAN_ANCHOR}", "sudo update-ca-certificates"],
        "rhel": [f"sudo cp {ca} {RHEL_ANCHOR}", "sudo update-ca-trust"],
        "macos": [f"sudo security add-trusted-cert -d -r trustRoot -k {MACOS_KEYCHAIN} {ca}"],
        # PowerShell, elevated; either line does it.
        "windows": [f"Import-Certificate -FilePath {ps_quote(s.ca)} -CertStoreLocation Cert:\\LocalMachine\\Root",
                    f"certutil -addstore -f Root {ps_quote(s.ca)}"],
    }


# ---- rendering ---------------------------------------------------------------------------


def comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, 88, break_long_words=False, break_on_hyphens=False)]


def verbatim(lines: Iterable[str], indent: str = "    ") -> list[str]:
    """Lines meant to be copied, as comments (never run by eval)."""
    return [f"#{indent}{line}".rstrip() for block in lines for line in block.splitlines()]


def header(s: ClientSetup, apply: str) -> list[str]:
    return [
        f"# Mirrorgate client set-up for the proxy {s.proxy.url}",
        f"#   CA certificate: {s.ca}",
        f"#   CA SHA-256:     {s.ca_sha256}",
        f"#   CA bundle:      {s.bundle} (the system roots plus that CA)",
        *comment(f"Apply the variables in this shell with: {apply}. Lines starting with # are "
                 "instructions, never run."),
    ]


def once_posix(s: ClientSetup) -> list[str]:
    """The steps a person does once per machine, for Linux and macOS, as comments."""
    ca_steps = ca_install(s)
    return [
        "",
        "# ---- Once per machine: tools that ignore the variables above ----",
        *comment("Maven reads its proxy only from ~/.m2/settings.xml; merge in:"),
        *verbatim([maven_settings_xml(s)]),
        *comment("and trusts only the JVM's truststore. javax.net.ssl.trustStore replaces Java's roots, so "
                 "start from a copy of the JDK's cacerts:"),
        *verbatim(truststore_commands(s) + [f'export MAVEN_OPTS="{maven_opts()}"']),
        *comment("Gradle and other JVM tools take system properties (gradle.properties: systemProp.*):"),
        *verbatim([jvm_proxy_properties(s)]),
        *comment(f"apt: {APT_CONF} (apt's https:// sources use it too, and need the CA in the system store):"),
        *verbatim([f"echo {shlex.quote(apt_line(s))} | sudo tee {APT_CONF}"]),
        *comment(f"Docker daemon (Engine 23+): merge into {DOCKER_DAEMON_JSON}, then trust the CA "
                 "system-wide (below) and: sudo systemctl restart docker"),
        *verbatim([json.dumps(docker_daemon_json(s), indent=2)]),
        *comment(f"or, for older engines, the systemd drop-in {DOCKER_DROPIN}:"),
        *verbatim([systemd_proxy_dropin(s)]),
        "",
        "# ---- Once per machine: trust the CA system-wide (as root) ----",
        *comment("Debian/Ubuntu:"), *verbatim(ca_steps["debian"]),
        *comment("RHEL/Fedora:"), *verbatim(ca_steps["rhel"]),
        *comment("macOS:"), *verbatim(ca_steps["macos"]),
        *comment("Windows (elevated PowerShell; either line):"), *verbatim(ca_steps["windows"]),
    ]


def render_sh(s: ClientSetup) -> str:
    lines = header(s, 'eval "$(./run_proxy.sh env …)"')
    for why, pairs in env_groups(s):
        lines += ["", *comment(why)]
        lines += [f"export {name}={shlex.quote(value)}" for name, value in pairs]
    return "\n".join(lines + once_posix(s)) + "\n"


def render_fish(s: ClientSetup) -> str:
    lines = header(s, "./run_proxy.sh env --format fish … | source")
    for why, pairs in env_groups(s):
        lines += ["", *comment(why)]
        lines += [f"set -gx {name} {fish_quote(value)}" for name, value in pairs]
    return "\n".join(lines + once_posix(s)) + "\n"


def render_powershell(s: ClientSetup) -> str:
    lines = header(s, "./run_proxy.sh env --format powershell … | Out-String | Invoke-Expression")
    lines += comment("Windows environment names ignore case, so each variable is set once, in upper case.")
    for why, pairs in env_groups(s):
        lines += ["", *comment(why)]
        seen = set()
        for name, value in pairs:
            if name.upper() not in seen:
                seen.add(name.upper())
                lines.append(f"$env:{name.upper()} = {ps_quote(value)}")
    store = f"$HOME\\{TRUSTSTORE.replace('/', chr(92))}"
    lines += [
        "",
        "# ---- Once per machine ----",
        *comment("Trust the CA system-wide (elevated PowerShell; either line):"),
        *verbatim(ca_install(s)["windows"]),
        *comment("Keep the variables for new sessions: [Environment]::SetEnvironmentVariable('HTTPS_PROXY', "
                 "'…', 'User'), and so on."),
        *comment("Maven reads its proxy only from $HOME\\.m2\\settings.xml; merge in:"),
        *verbatim([maven_settings_xml(s)]),
        *comment("and trusts only the JVM's truststore, which javax.net.ssl.trustStore replaces; start from "
                 "a copy of the JDK's cacerts:"),
        *verbatim([
            'New-Item -ItemType Directory -Force "$HOME\\.m2" | Out-Null',
            'keytool -importkeystore -noprompt -srckeystore "$env:JAVA_HOME\\lib\\security\\cacerts" '
            f'-srcstorepass changeit -destkeystore "{store}" -deststoretype PKCS12 -deststorepass changeit',
            f"keytool -importcert -noprompt -alias mirrorgate -file {ps_quote(s.ca)} -keystore \"{store}\" "
            "-storetype PKCS12 -storepass changeit",
            f'$env:MAVEN_OPTS = "-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit"',
        ]),
        *comment("Docker Desktop: Settings > Resources > Proxies, with the proxy above."),
    ]
    return "\n".join(lines) + "\n"


def as_json(s: ClientSetup) -> dict:
    return {
        "proxy": s.proxy.url,
        "ca": s.ca,
        "ca_sha256": s.ca_sha256,
        "bundle": s.bundle,
        "no_proxy": list(s.no_proxy),
        "env": environment(s),
        "maven": {"settings_xml": maven_settings_xml(s), "truststore_commands": truststore_commands(s),
                  "maven_opts": maven_opts()},
        "jvm_proxy_properties": jvm_proxy_properties(s),
        "apt": {"path": APT_CONF, "line": apt_line(s)},
        "docker": {"daemon_json": docker_daemon_json(s), "systemd_dropin_path": DOCKER_DROPIN,
                   "systemd_dropin": systemd_proxy_dropin(s)},
        "ca_install": ca_install(s),
    }


def render_json(s: ClientSetup) -> str:
    return json.dumps(as_json(s), indent=2) + "\n"


RENDERERS = {"sh": render_sh, "fish": render_fish, "powershell": render_powershell, "json": render_json}


def render(s: ClientSetup, fmt: str) -> str:
    # Checked here too, whoever built `s`: every renderer puts these inside comments.
    for value in (s.proxy.url, s.ca, s.bundle, *s.no_proxy):
        plain(value, "value")
    return RENDERERS[fmt](s)


# ---- the files on this machine -----------------------------------------------------------


def system_roots() -> Path | None:
    """The machine's own trust store as one file (it holds any corporate roots an admin
    installed), else certifi's if certifi is installed."""
    cafile = ssl.get_default_verify_paths().cafile
    for candidate in (cafile, *SYSTEM_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


def ensure_bundle(ca_pem: str, bundle: Path, roots: Path | None, *, exact: bool = False) -> bool:
    """Write the bundle unless it already holds this CA (with `exact`, unless it is exactly
    these roots plus this CA, so that a proxy's start picks up new system roots). True
    if it was written. Written under a unique temporary name and renamed into place, so
    that processes starting together on one confdir never see half a bundle."""
    try:
        current: str | None = bundle.read_text()
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as e:
        raise SetupError(f"cannot read the CA bundle {bundle}: {e}") from None
    if current is not None and not exact and bundle_is_current(current, ca_pem):
        return False
    if roots is None:
        raise SetupError("found no system trust store to build the CA bundle from (install ca-certificates, "
                         "or certifi into this Python)")
    try:
        text = bundle_text(roots.read_text(), ca_pem)
        if text == current:
            return False
        fd, tmp = tempfile.mkstemp(dir=bundle.parent, prefix=f".{bundle.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # public certificates: every client user reads it
            os.replace(tmp, bundle)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise SetupError(f"cannot write the CA bundle {bundle}: {e}") from None
    return True


def load_setup(proxy: str, confdir: str, no_proxy: Iterable[str]) -> ClientSetup:
    """Reads the CA in `confdir` and makes sure the bundle beside it is current."""
    directory = Path(os.path.abspath(os.path.expanduser(plain(confdir, "confdir"))))
    ca, bundle = directory / CA_NAME, directory / BUNDLE_NAME
    parsed, hosts = parse_proxy(proxy), no_proxy_hosts(no_proxy)
    try:
        ca_pem = ca.read_text()
    except FileNotFoundError:
        raise SetupError(f"no CA certificate at {ca}: start the proxy once with this confdir "
                         "(./run_proxy.sh --set confdir=…), which creates it, or pass --confdir") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SetupError(f"cannot read the CA certificate {ca}: {e}") from None
    fingerprint = ca_fingerprint(ca_pem)
    if ensure_bundle(ca_pem, bundle, system_roots()):
        print(f"mirrorgate env: wrote the CA bundle {bundle}", file=sys.stderr)
    return ClientSetup(parsed, str(ca), str(bundle), fingerprint, hosts)


def arguments() -> argparse.ArgumentParser:
    a = argparse.ArgumentParser(
        prog="run_proxy.sh env",
        description="Print what a client machine needs to use Mirrorgate: proxy and CA variables, "
                    "Maven/apt/Docker settings and the CA install steps. Works without a running proxy.")
    a.add_argument("--proxy", default=DEFAULT_PROXY, metavar="URL",
                   help=f"the proxy as clients reach it, http://[USER:PASSWORD@]HOST:PORT (default {DEFAULT_PROXY})")
    a.add_argument("--confdir", default=DEFAULT_CONFDIR, metavar="DIR",
                   help=f"the proxy's confdir, holding {CA_NAME} (default {DEFAULT_CONFDIR}); "
                        f"{BUNDLE_NAME} is written there if missing")
    a.add_argument("--no-proxy", action="append", default=[], metavar="HOST[,HOST…]",
                   help="hosts to reach directly, added to localhost,127.0.0.1,::1 (repeatable)")
    a.add_argument("--format", choices=FORMATS, default="sh",
                   help="sh (default; eval \"$(…)\"), fish (… | source), powershell, or json")
    return a


def failure(message: str, fmt: str) -> str:
    """What stdout carries when there is nothing to set: `eval "$(… env)"` returns the
    status of what it evaluates, not of the command, so a bare failure would pass
    unnoticed in a `set -e` script."""
    if fmt in ("sh", "fish"):
        return "false\n"
    if fmt == "powershell":
        return f"throw {ps_quote(CONTROL.sub('?', message))}\n"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    try:
        setup = load_setup(args.proxy, args.confdir, args.no_proxy)
    except SetupError as e:
        message = f"mirrorgate env: {e}"
        print(message, file=sys.stderr)
        sys.stdout.write(failure(message, args.format))
        return 1
    sys.stdout.write(render(setup, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
