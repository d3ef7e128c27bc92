"""docs/client-setup.md, snippet by snippet, checked for real where this machine allows:
`./run_proxy.sh env` evaluated in bash and curl fetching through a real proxy with only
those variables; the CI jobs' gateway steps run as the CI would run them; the systemd unit
through `systemd-analyze` and its ExecStart started; the Kubernetes Deployment's arguments
started with the ConfigMap's rules and the Secret's confdir, and its readiness probe run.

Every fenced block in the document has a `title=`, and every title a check here."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mirrorgate import clientenv
from mirrorgate.rules import parse_rules
from mirrorgate.trace import parse_header
from tests.support.fakes import WAIT, Fake, closed_port, server_tls
from tests.support.proxy import ROOT, ProxyProcess, launch, start_proxy

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "client-setup.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
GATEWAY = "http://gateway.corp.example:8080"  # the proxy URL the document uses throughout
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not on PATH")


def snippets() -> dict[str, tuple[str, str]]:
    """title -> (language, text) for every fenced block of the document."""
    found: dict[str, tuple[str, str]] = {}
    for m in FENCE.finditer(DOC.read_text()):
        language, *attributes = m.group(1).split()
        titles = [a.removeprefix("title=") for a in attributes if a.startswith("title=")]
        assert len(titles) == 1, f"a block without one title=: ```{m.group(1)}"
        assert titles[0] not in found, f"two blocks titled {titles[0]}"
        found[titles[0]] = (language, m.group(2))
    return found


def snippet(title: str) -> str:
    return snippets()[title][1]


def doc_setup(ca: str = "mirrorgate-ca.pem", no_proxy: tuple[str, ...] = clientenv.DEFAULT_NO_PROXY):
    """What `env --proxy GATEWAY` generates, with the document's file names."""
    return clientenv.ClientSetup(clientenv.parse_proxy(GATEWAY), ca, "mirrorgate-ca-bundle.pem", "", no_proxy)


def commands(shell: str) -> list[str]:
    """The command lines of a shell snippet: comments and continuations folded away."""
    text = shell.replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


SHELL = ["env-local", "env-remote", "ca-install-unix", "docker-ca", "containerd-ca", "mirrorgate-service-install",
         "k8s-secret"]
CHECKED = {*SHELL, "ca-install-windows", "docker-daemon-json", "docker-systemd-dropin", "containerd-systemd-dropin",
           "containerd-hosts-toml", "mirrorgate-service", "github-actions", "gitlab-ci", "mirrorgate-image",
           "k8s-manifests"}


def test_every_snippet_has_a_title_and_a_check_here():
    assert set(snippets()) == CHECKED


# ---- shell -------------------------------------------------------------------------------


@pytest.mark.parametrize("title", SHELL)
@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_shell_snippets_parse(title, shell):
    language, text = snippets()[title]
    assert language == "sh"
    out = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_env_invocations_in_the_document_take_only_real_options():
    calls = [c for title in SHELL for c in commands(snippet(title)) if "run_proxy.sh env" in c]
    assert len(calls) >= 6
    parser = clientenv.arguments()
    for call in calls:
        inner = re.search(r"run_proxy\.sh env([^)|>]*)", call).group(1)
        args = [a for a in shlex.split(inner) if a != "--help"]
        parsed = parser.parse_args(args)
        assert parsed.format in clientenv.FORMATS
        clientenv.parse_proxy(parsed.proxy)
    assert commands(snippet("env-local"))[0] == 'eval "$(./run_proxy.sh env)"'


def test_ca_install_snippets_are_what_env_prints():
    steps = clientenv.ca_install(doc_setup())
    assert commands(snippet("ca-install-unix")) == steps["debian"] + steps["rhel"] + steps["macos"]
    assert commands(snippet("ca-install-windows")) == steps["windows"]


# ---- Docker and containerd ---------------------------------------------------------------


def systemd_verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit_dir / unit)], capture_output=True, text=True,
                          timeout=120)


def check_drop_in(text: str, unit: str, tmp_path: Path) -> None:
    """A drop-in beside a stand-in unit: systemd-analyze reads both and names any key or
    section it does not know (it would otherwise ignore them silently at boot)."""
    if SYSTEMD_ANALYZE is None:
        ini = configparser.ConfigParser(strict=False, interpolation=None)
        ini.read_string(text)
        assert ini.sections() == ["Service"] and set(ini["Service"]) == {"environment"}
        return
    (tmp_path / unit).write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    (tmp_path / f"{unit}.d").mkdir()
    (tmp_path / f"{unit}.d" / "http-proxy.conf").write_text(text)
    out = systemd_verify(tmp_path, unit)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_docker_daemon_json_is_what_env_prints():
    assert json.loads(snippet("docker-daemon-json")) == clientenv.docker_daemon_json(doc_setup())


def test_docker_systemd_drop_in(tmp_path):
    text = snippet("docker-systemd-dropin")
    assert text == clientenv.systemd_proxy_dropin(doc_setup())
    check_drop_in(text, "docker.service", tmp_path)


def test_docker_ca_goes_where_the_daemon_looks_for_registry_1_docker_io():
    assert "sudo cp mirrorgate-ca.pem /etc/docker/certs.d/registry-1.docker.io/ca.crt" in commands(
        snippet("docker-ca"))


def test_containerd_systemd_drop_in(tmp_path):
    text = snippet("containerd-systemd-dropin")
    cluster = clientenv.no_proxy_hosts(["10.0.0.0/8,.svc,.cluster.local"])
    assert text == clientenv.systemd_proxy_dropin(doc_setup(no_proxy=cluster))
    check_drop_in(text, "containerd.service", tmp_path)


def test_containerd_hosts_toml_names_the_ca_that_the_copy_step_puts_there():
    hosts = tomllib.loads(snippet("containerd-hosts-toml"))
    assert hosts["server"] == "https://registry-1.docker.io"
    assert f"sudo cp mirrorgate-ca.pem {hosts['ca']}" in commands(snippet("containerd-ca"))
    assert hosts["ca"].startswith("/etc/containerd/certs.d/docker.io/")


# ---- a real proxy, and clients that get only the generated variables ---------------------

RULES = """\
version: 1
profiles:
  test: "fakes"
default_profile: test
defaults:
  timeouts: {{connect: 5s, first_byte: 20s, idle: 30s}}
rules:
  - name: reg
    match: {origin}
    mirrors:
      test:
        - {mirror}
"""


@dataclass
class Gateway:
    proxy: ProxyProcess
    origin: Fake
    mirror: Fake

    def fingerprint(self) -> str:
        """The CA's SHA-256 as `env --format json` prints it for CI variables."""
        out = subprocess.run([sys.executable, "-m", "mirrorgate.clientenv", "--confdir", str(self.proxy.confdir),
                              "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["ca_sha256"]

    def artifact(self, path: str) -> str:
        """A URL at the origin that the rules send to the mirror; the origin's copy differs."""
        self.mirror.serve(path, f"mirror bytes of {path}".encode())
        self.origin.serve(path, b"origin bytes")
        return self.origin.url + path.lstrip("/")


@pytest.fixture(scope="module")
def gateway(loops, pki, tmp_path_factory):
    """One proxy for the module: the fakes' CA trusted upstream, as the `proxy` fixture does."""
    tls = server_tls(str(pki.cert), str(pki.key))
    origin = Fake(loops, "origin", "127.0.0.2", tls).start()
    mirror = Fake(loops, "mirror", "127.0.0.3", tls).start()
    d = tmp_path_factory.mktemp("gateway")
    rules = d / "rules.yaml"
    rules.write_text(RULES.format(origin=origin.url, mirror=mirror.url))
    p = start_proxy(rules, d / "confdir", pki.ca)
    try:
        yield Gateway(p, origin, mirror)
    finally:
        p.stop()
        origin.stop()
        mirror.stop()


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """Nothing that could point a client at a proxy or a CA except what the test adds."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


@dataclass
class Fetch:
    returncode: int
    stderr: str
    body: bytes
    headers: dict[str, str]


def curl_lines(url: str, out: Path) -> str:
    return f"curl -sS --max-time 60 -D {shlex.quote(str(out / 'head'))} -o {shlex.quote(str(out / 'body'))} {url}"


def fetched(out: subprocess.CompletedProcess, where: Path) -> Fetch:
    head = (where / "head").read_text() if (where / "head").exists() else ""
    # With a proxy, curl also records the CONNECT answer: the last block is the response.
    block = [b for b in re.split(r"\r?\n\r?\n", head) if b.strip()][-1:] or [""]
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in block[0].splitlines()[1:])}
    body = (where / "body").read_bytes() if (where / "body").exists() else b""
    return Fetch(out.returncode, out.stderr, body, headers)


def curl_with(env: dict[str, str], url: str, where: Path) -> Fetch:
    out = subprocess.run(shlex.split(curl_lines(url, where)), env=env, capture_output=True, text=True, timeout=90)
    return fetched(out, where)


def assert_served_by_the_mirror_through_the_proxy(gw: Gateway, path: str, got: Fetch) -> None:
    assert got.returncode == 0, got.stderr
    assert got.body == f"mirror bytes of {path}".encode()
    assert parse_header(got.headers["x-mirrorgate"]) == {"rule": "reg", "upstream": f"mirror:{gw.mirror.url}"}
    assert (gw.mirror.count(path), gw.origin.count(path)) == (1, 0)


@needs_curl
def test_eval_of_env_makes_curl_use_the_proxy_and_trust_its_ca(gateway, tmp_path):
    p = gateway.proxy
    bundle = p.confdir / clientenv.BUNDLE_NAME
    bundle.unlink()  # as on a machine where the proxy never ran: env writes it
    url = gateway.artifact("/pkg/env.tgz")
    env_call = f"./run_proxy.sh env --proxy {p.url} --confdir {shlex.quote(str(p.confdir))}"

    out = subprocess.run(["bash", "-c", f'eval "$({env_call})" && {curl_lines(url, tmp_path)}'], cwd=ROOT,
                         env=bare_env(tmp_path), capture_output=True, text=True, timeout=180)

    assert_served_by_the_mirror_through_the_proxy(gateway, "/pkg/env.tgz", fetched(out, tmp_path))
    assert f"wrote the CA bundle {bundle}" in out.stderr
    roots = clientenv.system_roots().read_text()
    assert bundle.read_text() == clientenv.bundle_text(roots, p.ca.read_text())


@needs_curl
def test_without_the_ca_variables_curl_refuses_the_proxys_certificate(gateway, tmp_path):
    # The control for the test above: what made curl trust the proxy was the bundle.
    p = gateway.proxy
    url = gateway.artifact("/pkg/no-ca.tgz")
    env_call = f"./run_proxy.sh env --proxy {p.url} --confdir {shlex.quote(str(p.confdir))}"
    script = f'eval "$({env_call})" && unset CURL_CA_BUNDLE SSL_CERT_FILE && {curl_lines(url, tmp_path)}'

    got = fetched(subprocess.run(["bash", "-c", script], cwd=ROOT, env=bare_env(tmp_path), capture_output=True,
                                 text=True, timeout=180), tmp_path)

    assert got.returncode == 60, got.stderr  # peer certificate cannot be authenticated
    assert gateway.mirror.count("/pkg/no-ca.tgz") + gateway.origin.count("/pkg/no-ca.tgz") == 0


@pytest.mark.skipif(shutil.which("keytool") is None, reason="keytool (a JDK) is not on PATH")
def test_maven_truststore_commands_make_a_truststore_with_the_jdk_roots_and_the_ca(gateway, tmp_path):
    java_home = Path(os.path.realpath(shutil.which("keytool"))).parents[1]
    out = subprocess.run([sys.executable, "-m", "mirrorgate.clientenv", "--confdir", str(gateway.proxy.confdir),
                          "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    maven = json.loads(out.stdout)["maven"]
    env = bare_env(tmp_path / "home", JAVA_HOME=str(java_home))
    (tmp_path / "home").mkdir()
    # Run as printed, in a home where Maven never ran.
    script = " && ".join(maven["truststore_commands"]) + f' && export MAVEN_OPTS="{maven["maven_opts"]}"'
    script += ' && keytool -list -keystore ~/.m2/mirrorgate-truststore.p12 -storepass changeit && echo "$MAVEN_OPTS"'
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=180)

    assert done.returncode == 0, done.stdout + done.stderr
    listing = done.stdout
    roots = int(re.search(r"Your keystore contains (\d+) entr", listing).group(1))
    assert roots > 10  # the JDK's roots came along: the truststore replaces them
    entry = re.search(r"^mirrorgate, .*trustedCertEntry,\s*\nCertificate fingerprint \(SHA-256\): ([0-9A-F:]+)$",
                      listing, re.M)
    assert entry and entry.group(1).replace(":", "").lower() == json.loads(out.stdout)["ca_sha256"]
    store = tmp_path / "home" / ".m2" / "mirrorgate-truststore.p12"
    assert listing.splitlines()[-1] == (f"-Djavax.net.ssl.trustStore={store} "
                                        "-Djavax.net.ssl.trustStorePassword=changeit")


def github_workflow() -> dict:
    w = yaml.safe_load(snippet("github-actions"))
    # YAML 1.1 reads the key `on` as True.
    assert w.get("on", w.get(True)) == ["push", "pull_request"]
    return w


def test_github_workflow_shape():
    job = github_workflow()["jobs"]["build"]
    assert job["runs-on"] and job["steps"]
    first, *rest = job["steps"]
    # $GITHUB_ENV reaches only later steps, so the gateway step comes before any download.
    assert first["name"] == "Use the Mirrorgate gateway" and "uses" not in first
    assert [s.get("uses", "").split("@")[0] for s in rest[:2]] == ["actions/checkout", "actions/setup-node"]
    for name, value in job["env"].items():
        assert re.fullmatch(r"\$\{\{ (secrets|vars)\.(\w+) \}\}", value).group(2) == name


def run_github_step(gw: Gateway, tmp_path: Path, fingerprint: str) -> tuple[subprocess.CompletedProcess, Path]:
    job = github_workflow()["jobs"]["build"]
    values = {"MIRRORGATE_PROXY": gw.proxy.url, "MIRRORGATE_CA_SHA256": fingerprint}
    assert set(job["env"]) == set(values)
    script = tmp_path / "step.sh"
    script.write_text(job["steps"][0]["run"])
    github_env, runner_temp = tmp_path / "github_env", tmp_path / "runner temp"
    runner_temp.mkdir()
    # As GitHub runs a `run:` step on Linux.
    out = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], capture_output=True,
                         text=True, timeout=120,
                         env=bare_env(tmp_path, GITHUB_ENV=str(github_env), RUNNER_TEMP=str(runner_temp), **values))
    return out, github_env


@needs_curl
def test_github_gateway_step_sets_what_env_sets_and_curl_works_with_it(gateway, tmp_path):
    out, github_env = run_github_step(gateway, tmp_path, gateway.fingerprint())
    assert out.returncode == 0, out.stdout + out.stderr

    variables = dict(line.split("=", 1) for line in github_env.read_text().splitlines())
    assert set(variables) == set(clientenv.environment(doc_setup()))
    url = gateway.artifact("/pkg/github.tgz")
    (tmp_path / "fetch").mkdir()
    assert_served_by_the_mirror_through_the_proxy(
        gateway, "/pkg/github.tgz", curl_with(bare_env(tmp_path, **variables), url, tmp_path / "fetch"))


def test_github_gateway_step_stops_the_job_on_another_ca(gateway, tmp_path):
    out, github_env = run_github_step(gateway, tmp_path, "0" * 64)
    assert out.returncode == 1
    assert f"::error::Mirrorgate's CA has SHA-256 {gateway.fingerprint()}, expected {'0' * 64}" in out.stdout
    assert not github_env.exists()


def gitlab_ci() -> dict:
    ci = yaml.safe_load(snippet("gitlab-ci"))
    assert ci["build"]["extends"] == ".mirrorgate" and ci["build"]["script"]
    assert all(isinstance(line, str) for line in ci[".mirrorgate"]["before_script"])
    return ci


def run_gitlab_before_script(gw: Gateway, tmp_path: Path, fingerprint: str) -> subprocess.CompletedProcess:
    lines = gitlab_ci()[".mirrorgate"]["before_script"]
    dump = tmp_path / "env.json"
    # The runner runs the lines in one shell, stopping at the first failure; `sh` is the
    # plainest shell an image may have. Then the job's environment is dumped for the test.
    script = "\n".join(lines) + f'\n"{sys.executable}" -c "import json, os; print(json.dumps(dict(os.environ)))" > {dump}\n'
    return subprocess.run(["sh", "-e", "-c", script], capture_output=True, text=True, timeout=120,
                          env=bare_env(tmp_path, TMPDIR=str(tmp_path), MIRRORGATE_PROXY=gw.proxy.url,
                                       MIRRORGATE_CA_SHA256=fingerprint))


@needs_curl
def test_gitlab_before_script_sets_what_env_sets_and_curl_works_with_it(gateway, tmp_path):
    out = run_gitlab_before_script(gateway, tmp_path, gateway.fingerprint())
    assert out.returncode == 0, out.stdout + out.stderr

    job_env = json.loads((tmp_path / "env.json").read_text())
    names = set(clientenv.environment(doc_setup()))
    assert names <= set(job_env)
    url = gateway.artifact("/pkg/gitlab.tgz")
    (tmp_path / "fetch").mkdir()
    got = curl_with(bare_env(tmp_path, **{n: job_env[n] for n in names}), url, tmp_path / "fetch")
    assert_served_by_the_mirror_through_the_proxy(gateway, "/pkg/gitlab.tgz", got)


def test_gitlab_before_script_stops_the_job_on_another_ca(gateway, tmp_path):
    out = run_gitlab_before_script(gateway, tmp_path, "0" * 64)
    assert out.returncode != 0
    assert f"Mirrorgate's CA has SHA-256 {gateway.fingerprint()}, expected {'0' * 64}" in out.stderr
    assert not (tmp_path / "env.json").exists()


# ---- Mirrorgate as a service -------------------------------------------------------------


def unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, continuation lines joined (keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return out


def service_command() -> list[str]:
    [exec_start] = unit(snippet("mirrorgate-service"))["Service"]["ExecStart"]
    return shlex.split(exec_start)


def test_systemd_unit_verifies_with_its_real_exec_start(tmp_path):
    text = snippet("mirrorgate-service").replace("/opt/mirrorgate", str(ROOT))
    (tmp_path / "mirrorgate.service").write_text(text)
    if SYSTEMD_ANALYZE is None:
        sections = unit(text)
        assert {"Unit", "Service", "Install"} <= set(sections)
        assert Path(shlex.split(sections["Service"]["ExecStart"][0])[0]).is_file()
        return
    out = systemd_verify(tmp_path, "mirrorgate.service")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    # The hardening, as systemd scores it (0 safest - 10 unsafe): 2.5 or better.
    security = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=25",
                               str(tmp_path / "mirrorgate.service")], capture_output=True, text=True, timeout=120)
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr


def test_systemd_unit_writes_only_where_protect_system_strict_lets_it():
    service = unit(snippet("mirrorgate-service"))["Service"]
    assert service["ProtectSystem"] == ["strict"] and service["User"] == ["mirrorgate"]
    options = dict(service_command()[i + 1].split("=", 1) for i, a in enumerate(service_command()) if a == "--set")
    assert options["confdir"] == "/var/lib/" + service["StateDirectory"][0]
    assert options["cache_dir"] == "/var/cache/" + service["CacheDirectory"][0]
    assert service["Environment"] == ["HOME=" + options["confdir"]]
    install = commands(snippet("mirrorgate-service-install"))
    assert f"sudo install -m 0644 /opt/mirrorgate/rules/default.yaml {options['rules']}" in install


def test_systemd_exec_start_runs_mirrorgate_through_run_proxy_sh(tmp_path):
    cmd = service_command()
    assert cmd[0] == "/opt/mirrorgate/run_proxy.sh"
    (tmp_path / "etc").mkdir()
    shutil.copy(ROOT / "rules" / "default.yaml", tmp_path / "etc" / "rules.yaml")
    paths = {"/etc/mirrorgate": tmp_path / "etc", "/var/lib/mirrorgate": tmp_path / "state",
             "/var/cache/mirrorgate": tmp_path / "cache", "/opt/mirrorgate": ROOT}
    # Loopback only, on a free port; every other argument as the unit has it.
    swap = {"0.0.0.0": "127.0.0.1", "8080": "0"}
    args = [swap.get(a, a) for a in cmd]
    for old, new in paths.items():
        args = [a.replace(old, str(new)) for a in args]

    p = launch(args, tmp_path / "state", bare_env(tmp_path / "state"))
    try:
        assert f"Mirrorgate proxy listening on 127.0.0.1:{p.port}" in p.text()
        assert p.ca.is_file() and (tmp_path / "cache").is_dir()
    finally:
        p.stop()


# ---- Kubernetes --------------------------------------------------------------------------


def manifests() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(snippet("k8s-manifests")) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    assert all(d["metadata"]["name"] for d in docs)
    return by_kind


def container(m: dict[str, dict]) -> dict:
    [c] = m["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def settings(args: list[str]) -> dict[str, str]:
    return dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")


def test_k8s_configmap_rules_are_valid():
    rules = parse_rules(manifests()["ConfigMap"]["data"]["rules.yaml"], "k8s ConfigMap")
    assert [r.name for r in rules.rules] == ["npm", "pypi-simple", "pypi-files"]
    assert rules.default_profile == "cn"


def test_k8s_manifests_refer_to_each_other():
    m = manifests()
    deployment, service = m["Deployment"], m["Service"]
    pod = deployment["spec"]["template"]
    c = container(m)
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] == service["spec"]["selector"]
    # One replica owns the ReadWriteOnce cache; a rolling update would need two.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {v["mountPath"]: volumes[v["name"]] for v in c["volumeMounts"]}
    assert not any("subPath" in v for v in c["volumeMounts"])  # a subPath mount never sees ConfigMap edits
    opts = settings(c["args"])
    rules_dir, rules_key = opts["rules"].rsplit("/", 1)
    assert mounts[rules_dir]["configMap"]["name"] == m["ConfigMap"]["metadata"]["name"]
    assert rules_key in m["ConfigMap"]["data"]
    secret_name = shlex.split(commands(snippet("k8s-secret"))[0])[4]
    assert mounts[opts["confdir"]]["secret"]["secretName"] == secret_name
    assert mounts[opts["cache_dir"]]["persistentVolumeClaim"]["claimName"] == m["PersistentVolumeClaim"]["metadata"]["name"]
    assert "emptyDir" in mounts["/tmp"] and c["securityContext"]["readOnlyRootFilesystem"] is True

    [port] = c["ports"]
    assert f"--listen-port={port['containerPort']}" in c["args"] and "--listen-host=0.0.0.0" in c["args"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"] == c["livenessProbe"]["tcpSocket"]["port"]
    assert f"http://127.0.0.1:{port['containerPort']}" in c["readinessProbe"]["exec"]["command"][-1]
    assert "127.0.0.0/8" in opts["client_allow"].split(",")  # the probe is a loopback client


def dockerfile() -> list[tuple[str, str]]:
    text = snippet("mirrorgate-image").replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_image_copies_what_the_package_needs_and_matches_the_deployment():
    steps = dockerfile()
    assert steps[0][0] == "FROM"
    copied = {src for kind, rest in steps if kind == "COPY" for src in rest.split()[:-1]}
    assert all((ROOT / src).exists() for src in copied)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", pyproject["project"]["readme"], "rules"} <= copied
    instructions = dict(steps)
    assert json.loads(instructions["ENTRYPOINT"]) == ["python", "-m", "mirrorgate"]
    assert json.loads(instructions["CMD"]) == ["--listen-host", "0.0.0.0", "--listen-port", "8080"]
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert instructions["USER"] == str(pod["securityContext"]["runAsUser"])
    assert instructions["EXPOSE"] == str(container(manifests())["ports"][0]["containerPort"])


def test_k8s_deployment_starts_mirrorgate_and_its_readiness_probe_passes(gateway, tmp_path):
    m = manifests()
    c = container(m)
    # The volumes, on this machine: the ConfigMap's files, the Secret made as the
    # document says (from a real confdir), the cache and /tmp.
    rules_dir, secret_dir = tmp_path / "rules", tmp_path / "secret"
    rules_dir.mkdir()
    secret_dir.mkdir()
    for key, value in m["ConfigMap"]["data"].items():
        (rules_dir / key).write_text(value)
    secret_files = []
    for arg in shlex.split(commands(snippet("k8s-secret"))[0]):
        if arg.startswith("--from-file="):
            key, source = arg.removeprefix("--from-file=").split("=", 1)
            shutil.copy(Path(source.replace("/var/lib/mirrorgate", str(gateway.proxy.confdir))), secret_dir / key)
            secret_files.append(key)
    opts = settings(c["args"])
    places = {str(Path(opts["rules"]).parent): rules_dir, opts["confdir"]: secret_dir,
              opts["cache_dir"]: tmp_path / "cache", "/tmp": tmp_path / "tmp"}
    swap = {"--listen-host=0.0.0.0": "--listen-host=127.0.0.1", "--listen-port=8080": "--listen-port=0"}

    def here(arg: str) -> str:
        key, sep, value = arg.partition("=")
        for mount in sorted(places, key=len, reverse=True):
            if sep and (value == mount or value.startswith(mount + "/")):
                return f"{key}={places[mount]}{value[len(mount):]}"
        return arg

    args = [here(swap.get(a, a)) for a in c["args"]]
    assert all("/etc/" not in a and "/var/" not in a for a in args), args

    entrypoint = json.loads(dict(dockerfile())["ENTRYPOINT"])
    p = launch([sys.executable, *entrypoint[1:], *args], secret_dir, bare_env(tmp_path, TMPDIR=str(tmp_path / "tmp")))
    try:
        probe = [sys.executable if a == "python" else a for a in c["readinessProbe"]["exec"]["command"]]
        ready = [a.replace("127.0.0.1:8080", f"127.0.0.1:{p.port}") for a in probe]
        out = subprocess.run(ready, capture_output=True, text=True, timeout=c["readinessProbe"]["timeoutSeconds"] + WAIT)
        assert out.returncode == 0, out.stderr
        with socket.create_connection(("127.0.0.1", p.port), timeout=WAIT):
            pass  # the liveness probe's TCP check
        # The probe can fail: against a port where nothing listens it does.
        down = [a.replace("127.0.0.1:8080", f"127.0.0.1:{closed_port()}") for a in probe]
        assert subprocess.run(down, capture_output=True, timeout=c["readinessProbe"]["timeoutSeconds"] + WAIT
                              ).returncode != 0
    finally:
        p.stop()
    assert "Rules: 3 rules from " + str(rules_dir / "rules.yaml") in p.text()
    # The Secret is all the confdir mitmproxy needs: it adds nothing but the CA bundle,
    # which a read-only mount refuses without harm.
    assert {f.name for f in secret_dir.iterdir()} <= {*secret_files, clientenv.BUNDLE_NAME}
