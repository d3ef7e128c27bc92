"""What the benchmark installs, and the real client that installs it.

Each workload is one registry: its packages (made with the tests' own builders in
tests/support, with random payloads of realistic sizes), an origin and a mirror serving
them (the tests' `Fake` servers, behind simulated WAN links), the Mirrorgate rules for
it, the `--map-remote` arguments a plain mitmdump user would write, and a `run` that
drives the real client against one of:

- `Target("origin")`: the registry itself (the client's default configuration);
- `Target("mirror")`: the mirror, configured per tool (what chsrc, nrm or GOPROXY= do);
- `Target("registry", url)`: a registry-style cache (Verdaccio, proxpi), per tool;

with or without an HTTPS proxy in front. Every run starts with empty client caches and
checks what was installed, so a fast run is also a correct one.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.fakes import Fake, LoopThread, server_tls
from tests.support.gomod import Module, module
from tests.support.npm import Package, package, packument
from tests.support.pki import Pki, loopback_hostname
from tests.support.proxy import clean_env
from tests.support.pypi import Dist, html_page, wheel

CLIENT_TIMEOUT = 900


def sizes(rng: random.Random, count: int, low: int, high: int) -> list[int]:
    """Log-uniform between `low` and `high`: many small packages, a few big ones."""
    return [int(low * (high / low) ** rng.random()) for _ in range(count)]


@dataclass(frozen=True)
class Target:
    kind: str  # "origin", "mirror" or "registry"
    url: str | None = None  # a registry's base URL


@dataclass
class Client:
    """How one run reaches the packages: a target, and maybe a proxy in front."""
    target: Target
    proxy: str | None
    ca_bundle: Path


@dataclass
class Site:
    """A fake server and the WAN link it sits behind; `url` is what clients see."""
    fake: Fake
    link: str
    url: str = ""


@dataclass
class Workload:
    name: str
    seed: int = 7
    sites: dict[str, Site] = field(default_factory=dict)

    host: tuple[str, str] = ("localhost", "127.0.0.1")  # (name in URLs, address)

    def start(self, loops: LoopThread, pki: Pki) -> None:
        """Build the packages and start the fakes (not yet published: the WAN ports are
        what the documents must name)."""
        self.build()
        for name, link in self.site_links().items():
            fake = Fake(loops, f"{self.name}-{name}", self.host[1], tls=server_tls(str(pki.cert), str(pki.key)),
                        name_in_url=self.host[0]).start()
            self.sites[name] = Site(fake, link)

    def shaped(self, ports: dict[str, int]) -> None:
        for name, site in self.sites.items():
            site.url = f"https://{self.host[0]}:{ports[f'{self.name}-{name}']}/"
        self.publish()

    def base(self, target: Target) -> str:
        """The URL the client is configured with for a target."""
        return target.url if target.kind == "registry" else self.sites[target.kind].url

    def upstream_requests(self) -> dict[str, int]:
        return {name: len(site.fake.hits) for name, site in self.sites.items()}

    # ---- what each workload defines ----------------------------------------------------
    def site_links(self) -> dict[str, str]:
        return {"origin": "origin", "mirror": "mirror"}

    def build(self) -> None: ...
    def publish(self) -> None: ...
    def rules(self) -> str: ...
    def map_remote(self) -> list[str]:
        return [f"|//{_hostport(self.sites['origin'].url)}/|//{_hostport(self.sites['mirror'].url)}/"]
    def run(self, client: Client, work: Path) -> None: ...
    def describe(self) -> str: ...


def _hostport(url: str) -> str:
    return url.split("//", 1)[1].rstrip("/")


def _run(cmd: list[str], env: dict, cwd: Path | None = None) -> None:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


# ---- npm ----------------------------------------------------------------------------


@dataclass
class Npm(Workload):
    """`npm ci` of a lockfile: the lockfile names the origin's tarball URLs, as every
    committed lockfile does; npm fetches the tarballs and nothing else."""
    name: str = "npm"
    count: int = 300
    history: int = 30  # earlier versions in each packument
    packages: list[Package] = field(default_factory=list)

    def build(self) -> None:
        rng = random.Random(self.seed)
        names = [f"@bench/pkg-{i:03d}" if i % 10 == 0 else f"bench-pkg-{i:03d}" for i in range(self.count)]
        self.packages = [package(n, "1.0.0", rng.randbytes(s))
                         for n, s in zip(names, sizes(rng, self.count, 2 << 10, 200 << 10))]

    def describe(self) -> str:
        total = sum(len(p.tarball) for p in self.packages)
        return f"npm ci, lockfile of {len(self.packages)} packages, {total / 1e6:.1f} MB of tarballs"

    def publish(self) -> None:
        for site in (self.sites["origin"], self.sites["mirror"]):
            for p in self.packages:
                # Real packuments list a package's whole history: what a proxy that reads
                # them pays for (never downloaded, so their tarballs need not exist).
                history = [Package(p.name, f"0.{k}.0", p.name.encode() + bytes([k])) for k in range(self.history)]
                doc = packument(history + [p], site.url)
                # Registries take either case of %2f in a scoped name; Verdaccio sends %2F.
                for path in {p.packument_path, p.packument_path.replace("%2f", "%2F")}:
                    site.fake.serve(path, doc, headers={"Content-Type": "application/json"})
                site.fake.serve(p.tarball_path, p.tarball, headers={"Content-Type": "application/octet-stream"})

    def rules(self) -> str:
        return f"""\
  - name: npm
    match: {self.sites['origin'].url}
    protocol: npm
    mirrors:
      bench: [{self.sites['mirror'].url}]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache:
      metadata: ["/*", "/@*/*"]
      artifacts: ["/**/-/*.tgz"]
      ttl: 5m
      vary: [Accept]
"""

    def run(self, client: Client, work: Path) -> None:
        origin = self.sites["origin"].url.rstrip("/")
        project = work / "project"
        project.mkdir()
        deps = {p.name: p.version for p in self.packages}
        (project / "package.json").write_text(json.dumps(
            {"name": "bench-app", "version": "1.0.0", "private": True, "dependencies": deps}))
        lock = {"name": "bench-app", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
                "packages": {"": {"name": "bench-app", "version": "1.0.0", "dependencies": deps},
                             **{f"node_modules/{p.name}": {"version": p.version, "resolved": origin + p.tarball_path,
                                                           "integrity": p.integrity} for p in self.packages}}}
        (project / "package-lock.json").write_text(json.dumps(lock, indent=2))
        registry = self.base(client.target)
        (work / "npmrc").write_text("")
        (work / "npmrc-global").write_text("")
        env = {**clean_env(), "HOME": str(work), "NODE_EXTRA_CA_CERTS": str(client.ca_bundle)}
        cmd = ["npm", "ci", "--userconfig", str(work / "npmrc"), "--globalconfig", str(work / "npmrc-global"),
               "--registry", registry, "--replace-registry-host=always", "--cafile", str(client.ca_bundle),
               "--cache", str(work / "npm-cache"), "--no-audit", "--no-fund", "--no-update-notifier",
               "--ignore-scripts", "--loglevel", "error"]
        if client.proxy:
            cmd += ["--proxy", client.proxy, "--https-proxy", client.proxy]
        _run(cmd, env, project)
        installed = json.loads((project / "node_modules" / ".package-lock.json").read_text())["packages"]
        if len(installed) != len(self.packages):
            raise RuntimeError(f"npm installed {len(installed)} of {len(self.packages)} packages")


# ---- pip ----------------------------------------------------------------------------


@dataclass
class Pip(Workload):
    """`pip install` of pinned wheels: one index page and one wheel per project, the
    wheels from a separate file host, as on pypi.org."""
    name: str = "pip"
    count: int = 40
    dists: list[Dist] = field(default_factory=list)

    def site_links(self) -> dict[str, str]:
        return {"origin": "origin", "files": "origin", "mirror": "mirror"}

    def base(self, target: Target) -> str:
        below = {"origin": "simple/", "mirror": "pypi/web/simple/"}.get(target.kind, "")
        return super().base(target) + below

    def build(self) -> None:
        rng = random.Random(self.seed)
        self.dists = [wheel(f"bench-wheel-{i:02d}", "1.0", rng.randbytes(s))
                      for i, s in enumerate(sizes(rng, self.count, 10 << 10, 2 << 20))]

    def describe(self) -> str:
        total = sum(len(d.data) for d in self.dists)
        return f"pip install of {len(self.dists)} pinned wheels, {total / 1e6:.1f} MB"

    def publish(self) -> None:
        origin, files, mirror = (self.sites[n] for n in ("origin", "files", "mirror"))
        for d in self.dists:
            origin.fake.serve(f"/simple/{d.project}/", html_page(d.project, [d], lambda d: f"{files.url}packages/{d.hash_path}"),
                              headers={"Content-Type": "text/html"})
            files.fake.serve(f"/packages/{d.hash_path}", d.data)
            mirror.fake.serve(f"/pypi/web/simple/{d.project}/",
                              html_page(d.project, [d], lambda d: f"../../packages/{d.hash_path}"),
                              headers={"Content-Type": "text/html"})
            mirror.fake.serve(f"/pypi/web/packages/{d.hash_path}", d.data)
            for site, page in ((origin, f"/simple/{d.project}"), (mirror, f"/pypi/web/simple/{d.project}")):
                # As pypi.org and nginx do; proxpi asks without the slash.
                site.fake.serve(page, status=301, headers={"Location": page + "/"})

    def rules(self) -> str:
        origin, files, mirror = (self.sites[n].url for n in ("origin", "files", "mirror"))
        return f"""\
  - name: pypi-simple
    match: {origin}simple/
    protocol: {{name: pypi-simple, files: {files}packages/}}
    mirrors:
      bench: [{mirror}pypi/web/simple/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache: {{metadata: ["/**"], ttl: 10m, vary: [Accept]}}
  - name: pypi-files
    match: {files}packages/
    protocol: pypi-files
    mirrors:
      bench: [{mirror}pypi/web/packages/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache: {{artifacts: ["/**"]}}
"""

    def map_remote(self) -> list[str]:
        origin, files, mirror = (_hostport(self.sites[n].url) for n in ("origin", "files", "mirror"))
        # The mirror's pages link relatively: a client that believes it is on the origin
        # index then asks the index host for /packages/.
        return [f"|//{origin}/simple/|//{mirror}/pypi/web/simple/",
                f"|//{origin}/packages/|//{mirror}/pypi/web/packages/",
                f"|//{files}/packages/|//{mirror}/pypi/web/packages/"]

    def run(self, client: Client, work: Path) -> None:
        index = self.base(client.target)
        env = {**clean_env(), "HOME": str(work), "PIP_CONFIG_FILE": "/dev/null",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        (work / "requirements.txt").write_text("".join(f"{d.project}=={d.version}\n" for d in self.dists))
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary", ":all:", "--no-compile",
               "--target", str(work / "site"), "--cache-dir", str(work / "pip-cache"), "--index-url", index,
               "--cert", str(client.ca_bundle), "-r", str(work / "requirements.txt")]
        if client.proxy:
            cmd += ["--proxy", client.proxy]
        _run(cmd, env)
        got = sorted(p.name for p in (work / "site").glob("*.dist-info"))
        if len(got) != len(self.dists):
            raise RuntimeError(f"pip installed {len(got)} of {len(self.dists)} wheels")


# ---- go -----------------------------------------------------------------------------


@dataclass
class Go(Workload):
    """`go mod download` of a module's requirements, go.sum present (so the go command
    checks every file; GOSUMDB is off for it, but Mirrorgate checks mirror bytes against
    the checksum database on the origin side)."""
    name: str = "go"
    count: int = 50
    # The go command downloads GOMAXPROCS modules at a time; None leaves it at the cores.
    maxprocs: int | None = None
    modules: list[Module] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The go command proxies no loopback name but this machine's own.
        named = loopback_hostname()
        if named is None:
            raise SystemExit("the go workload needs this machine's name to resolve to a loopback address")
        self.host = named

    def site_links(self) -> dict[str, str]:
        return {"origin": "origin", "sumdb": "origin", "mirror": "mirror"}

    def build(self) -> None:
        rng = random.Random(self.seed)
        self.modules = [module(f"bench.example/m{i:02d}", "v1.0.0", rng.randbytes(s))
                        for i, s in enumerate(sizes(rng, self.count, 5 << 10, 500 << 10))]

    def describe(self) -> str:
        total = sum(len(m.zip) for m in self.modules)
        return f"go mod download of {len(self.modules)} modules, {total / 1e6:.1f} MB of zips"

    def publish(self) -> None:
        for m in self.modules:
            self.sites["sumdb"].fake.serve(
                f"/lookup/{m.path}@{m.version}",
                f"1\n{m.gosum}\ngo.sum database tree\n1\nAAAA\n\n— sum.golang.org AAAA\n".encode())
            for site in (self.sites["origin"], self.sites["mirror"]):
                site.fake.serve(f"/{m.path}/@v/list", f"{m.version}\n".encode())
                site.fake.serve(m.url(".info"), m.info, headers={"Content-Type": "application/json"})
                site.fake.serve(m.url(".mod"), m.mod)
                site.fake.serve(m.url(".zip"), m.zip, headers={"Content-Type": "application/zip"})

    def rules(self) -> str:
        return f"""\
  - name: go-proxy
    match: {self.sites['origin'].url}
    protocol: {{name: go-proxy, sumdb: {self.sites['sumdb'].url}}}
    mirrors:
      bench: [{self.sites['mirror'].url}]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404, 410]
    cache:
      metadata: ["/**/@v/list", "/**/@latest"]
      artifacts: ["/**/@v/*.zip", "/**/@v/*.mod", 're:/.+/@v/v[0-9]+\\.[0-9]+\\.[0-9]+\\.info']
      ttl: 1m
"""

    def run(self, client: Client, work: Path) -> None:
        app = work / "app"
        app.mkdir()
        (app / "go.mod").write_text("module app.example/app\n\ngo 1.19\n\nrequire (\n"
                                    + "".join(f"\t{m.path} {m.version}\n" for m in self.modules) + ")\n")
        (app / "go.sum").write_text("".join(m.gosum for m in self.modules))
        goproxy = self.base(client.target)
        env = {**clean_env(), "HOME": str(work), "GOPATH": str(work / "gopath"), "GOCACHE": str(work / "gocache"),
               "GOFLAGS": "-modcacherw", "GOPROXY": goproxy.rstrip("/"), "GOSUMDB": "off", "GONOSUMDB": "",
               "GOPRIVATE": "", "GOTOOLCHAIN": "local", "SSL_CERT_FILE": str(client.ca_bundle)}
        if self.maxprocs:
            env["GOMAXPROCS"] = str(self.maxprocs)
        if client.proxy:
            env["HTTPS_PROXY"] = client.proxy
        _run(["go", "mod", "download"], env, app)
        got = list((work / "gopath" / "pkg" / "mod" / "bench.example").glob("m*@v1.0.0"))
        if len(got) != len(self.modules):
            raise RuntimeError(f"go downloaded {len(got)} of {len(self.modules)} modules")


# ---- one large artifact -------------------------------------------------------------


@dataclass
class Big(Workload):
    """One large artifact (a model file, an image layer, an ISO) fetched with curl."""
    name: str = "big"
    size: int = 1 << 30

    def describe(self) -> str:
        return f"curl of one {self.size / (1 << 30):.2f} GiB artifact" if self.size >= 1 << 30 else \
            f"curl of one {self.size >> 20} MiB artifact"

    def publish(self) -> None:
        for site in (self.sites["origin"], self.sites["mirror"]):
            site.fake.pattern("/files/big.bin", self.size)

    def rules(self) -> str:
        return f"""\
  - name: big
    match: {self.sites['origin'].url}
    mirrors:
      bench: [{self.sites['mirror'].url}]
    cache:
      artifacts: ["/files/**"]
"""

    def run(self, client: Client, work: Path) -> None:
        base = self.base(client.target)
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--cacert", str(client.ca_bundle)]
        if client.proxy:
            cmd += ["--proxy", client.proxy]
        out = subprocess.run(cmd + [base + "files/big.bin"], capture_output=True, text=True, env=clean_env(),
                             timeout=CLIENT_TIMEOUT)
        if out.returncode != 0 or int(out.stdout or 0) != self.size:
            raise RuntimeError(f"curl got {out.stdout or 0} of {self.size} bytes: {out.stderr[-500:]}")
