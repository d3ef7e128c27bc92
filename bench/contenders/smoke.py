"""Each specialised cache, started as the benchmark starts it, with one real client going
through it to a fake mirror on loopback (scratch check, not part of the benchmark):

    .venv/bin/python bench/contenders/smoke.py

Verdaccio: npm installs three packages, then a cold Verdaccio serves a lockfile whose
`resolved` URLs name the origin. proxpi: pip installs two wheels, twice. Squid: curl
fetches one file twice, the second a HIT.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.contenders import Running, pypi_cache, squid, verdaccio  # noqa: E402
from tests.support.fakes import WAIT, Fake, LoopThread, server_tls  # noqa: E402
from tests.support.npm import package, packument  # noqa: E402
from tests.support.pki import Pki, make_pki  # noqa: E402
from tests.support.proxy import clean_env  # noqa: E402
from tests.support.pypi import html_page, wheel  # noqa: E402

NPM_NAMES = ["pkg-a", "pkg-b", "@corp/scoped"]


def started(what: str, start) -> Running:
    t = time.monotonic()
    running = start()
    print(f"{what}: ready in {time.monotonic() - t:.2f} s at {running.registry_url or running.proxy_url}")
    return running


def run(cmd: list[str], env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=WAIT * 4)
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{out.stdout}\n{out.stderr}")
    return out


def npm(work: Path, project: Path, registry: str, ca: Path, *args: str) -> None:
    for rc in ("npmrc", "npmrc-global"):
        (work / rc).write_text("")
    env = {**clean_env(), "HOME": str(work)}
    run(["npm", *args, "--userconfig", str(work / "npmrc"), "--globalconfig", str(work / "npmrc-global"),
         "--registry", registry, "--cafile", str(ca), "--cache", str(work / "npm-cache"),
         "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel", "error"], env, cwd=project)


def npm_project(work: Path, lock: dict | None = None) -> Path:
    project = work / "project"
    project.mkdir(parents=True)
    (project / "package.json").write_text(json.dumps(
        {"name": "app", "version": "1.0.0", "private": True, "dependencies": {n: "1.0.0" for n in NPM_NAMES}}))
    if lock:
        (project / "package-lock.json").write_text(json.dumps(lock))
    return project


def resolved(project: Path) -> dict[str, str]:
    lock = json.loads((project / "package-lock.json").read_text())
    return {k.removeprefix("node_modules/"): v["resolved"] for k, v in lock["packages"].items() if k}


def smoke_verdaccio(loops: LoopThread, pki: Pki, tls, work: Path) -> None:
    origin = Fake(loops, "origin", tls=tls, name_in_url="localhost").start()
    mirror = Fake(loops, "npm mirror", tls=tls, name_in_url="localhost").start()
    for p in (package(n, "1.0.0") for n in NPM_NAMES):
        for fake in (origin, mirror):
            # npm escapes a scope's slash as %2f, Verdaccio as %2F; a registry takes both.
            for path in {p.packument_path, p.packument_path.replace("%2f", "%2F")}:
                fake.serve(path, packument([p], fake.url), headers={"Content-Type": "application/json"})
            fake.serve(p.tarball_path, p.tarball)

    v = started("verdaccio", lambda: verdaccio.start(work / "verdaccio", mirror.url, pki.ca))
    try:
        project = npm_project(work / "npm1")
        npm(work / "npm1", project, v.registry_url, pki.ca, "install")
        urls = resolved(project)
        assert all(u.startswith(v.registry_url) for u in urls.values()), urls
        assert mirror.count() == 2 * len(NPM_NAMES) and origin.count() == 0
        print(f"  npm install: 3 packages, lockfile resolved -> {v.registry_url}, "
              f"mirror hits {mirror.count()}, {v.usage()}")
    finally:
        v.stop()

    # A lockfile as a team commits it: every `resolved` names the origin registry.
    origin_lock = json.loads((project / "package-lock.json").read_text())
    for key, entry in origin_lock["packages"].items():
        if key:
            entry["resolved"] = entry["resolved"].replace(v.registry_url, origin.url)
    mirror.hits.clear()

    cold = started("verdaccio (cold)", lambda: verdaccio.start(work / "verdaccio-cold", mirror.url, pki.ca))
    try:
        project = npm_project(work / "npm2", origin_lock)
        npm(work / "npm2", project, cold.registry_url, pki.ca, "ci", "--replace-registry-host=always")
        assert origin.count() == 0, [h.path for h in origin.hits]
        assert sorted(h.path.replace("%2F", "%2f") for h in mirror.hits) == sorted(
            p for n in NPM_NAMES for p in (package(n, "1.0.0").packument_path, package(n, "1.0.0").tarball_path))
        print(f"  npm ci, lockfile naming the origin, --replace-registry-host=always: origin hits 0, "
              f"Verdaccio fetched packument then tarball from the mirror ({mirror.count()} hits)")

        # Without the option, npm fetches a non-npmjs `resolved` host as written.
        project = npm_project(work / "npm3", origin_lock)
        npm(work / "npm3", project, cold.registry_url, pki.ca, "ci")
        assert origin.count() == len(NPM_NAMES)
        print(f"  npm ci, same lockfile, default replace-registry-host=npmjs: origin hits {origin.count()} "
              f"(tarballs went around Verdaccio)")
    finally:
        cold.stop()
        origin.stop()
        mirror.stop()


def smoke_proxpi(loops: LoopThread, pki: Pki, tls, work: Path) -> None:
    mirror = Fake(loops, "pypi mirror", tls=tls).start()
    dists = [wheel("demo-pkg", "1.0"), wheel("other-pkg", "2.0")]
    for d in dists:
        page = f"/simple/{d.project}/"
        mirror.serve(page, html_page(d.project, [d], lambda d: f"../../packages/{d.hash_path}"),
                     headers={"Content-Type": "text/html"})
        # proxpi asks for the project without its trailing slash, as PyPI and nginx answer.
        mirror.serve(page.rstrip("/"), status=301, headers={"Location": page})
        mirror.serve(f"/packages/{d.hash_path}", d.data)

    p = started("proxpi", lambda: pypi_cache.start(work / "proxpi", mirror.url + "simple/", pki.ca))
    try:
        for attempt in ("cold", "warm"):
            target = work / f"pip-{attempt}"
            env = {**clean_env(), "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1",
                   "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            run([sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--target", str(target),
                 "--report", str(work / f"report-{attempt}.json"), "--index-url", p.registry_url,
                 *(f"{d.project}=={d.version}" for d in dists)], env)
            report = json.loads((work / f"report-{attempt}.json").read_text())
            urls = [i["download_info"]["url"] for i in report["install"]]
            assert all(u.startswith(p.registry_url) for u in urls), urls
            assert (target / "demo_pkg" / "__init__.py").read_text() == 'VERSION = "1.0"\n'
            print(f"  pip install ({attempt}): 2 wheels from {urls[0].rsplit('/', 2)[0]}/..., "
                  f"mirror hits so far {mirror.count()}")
        # Cold: per project the slash-less page (301), the page, HEAD and GET of the file.
        assert mirror.count() == 4 * len(dists), [(h.method, h.path) for h in mirror.hits]
        print(f"  warm run asked the mirror nothing; {p.usage()}")
    finally:
        p.stop()
        mirror.stop()


def smoke_squid(loops: LoopThread, pki: Pki, tls, work: Path) -> None:
    mirror = Fake(loops, "file host", tls=tls, name_in_url="localhost").start()
    mirror.pattern("/files/blob.bin", 8 << 20)
    s = started("squid", lambda: squid.start(work / "squid", pki.ca))
    try:
        bundle = work / "squid-clients-ca.pem"
        bundle.write_text(s.extra_ca.read_text() + pki.ca.read_text())
        for attempt in ("first", "second"):
            out = run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "--proxy", s.proxy_url, "--cacert", str(bundle),
                       mirror.url + "files/blob.bin"], clean_env())
            x_cache = next(line for line in out.stdout.splitlines() if line.lower().startswith("x-cache:"))
            print(f"  curl ({attempt}): {x_cache.strip()}")
        assert "HIT" in x_cache and mirror.count() == 1
        log = [line.split()[3] + " " + line.split()[6] for line in (s.workdir / "access.log").read_text().splitlines()
               if " GET " in line]
        print(f"  access.log: {log}; {s.usage()}")
        assert log[-1].startswith("TCP_HIT/200") or log[-1].startswith("TCP_MEM_HIT/200")
    finally:
        s.stop()
        mirror.stop()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="contenders-smoke-"))
    pki = make_pki(work / "pki")
    tls = server_tls(str(pki.cert), str(pki.key))
    loops = LoopThread()
    try:
        smoke_verdaccio(loops, pki, tls, work)
        smoke_proxpi(loops, pki, tls, work)
        smoke_squid(loops, pki, tls, work)
    except BaseException:
        print(f"logs and caches kept in {work}", file=sys.stderr)
        raise
    finally:
        loops.stop()
    shutil.rmtree(work, ignore_errors=True)
    print("all contenders work")


if __name__ == "__main__":
    main()
