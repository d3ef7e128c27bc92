"""Verdaccio (npm) in front of one mirror, as the usual "npm cache server": every package
proxied from the mirror uplink, tarballs kept on its own disk storage, reads anonymous.

Verdaccio rewrites each packument's `dist.tarball` to itself (from the Host of the
request), so npm fetches tarballs from Verdaccio, which fetches them from the uplink named
in the packument it cached. A lockfile whose `resolved` URLs name the origin installs
through it with `--registry <verdaccio> --replace-registry-host=always`: npm then swaps
scheme, host and port of every `resolved` for the registry's and keeps the path.

The defaults a user gets are kept (uplink `maxage` 2m for packuments, `cache: true` for
tarballs, web UI on, http-level pretty log), except that the log goes to
`workdir/verdaccio.log` and the audit middleware is off (it would call the real registry).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.contenders import ROOT, Running, free_port, http_ok, missing, wait_ready
from tests.support.proxy import clean_env

BIN = ROOT / "bench" / ".tools" / "verdaccio" / "node_modules" / ".bin" / "verdaccio"


def config(workdir: Path, port: int, uplink_url: str) -> str:
    # JSON is YAML, and spares quoting the '**' and '@*/*' package patterns by hand.
    every = {"access": "$all", "publish": "$authenticated", "unpublish": "$authenticated", "proxy": "mirror"}
    return json.dumps({
        "storage": str(workdir / "storage"),
        "listen": f"127.0.0.1:{port}",
        "auth": {"htpasswd": {"file": str(workdir / "htpasswd")}},
        "uplinks": {"mirror": {"url": uplink_url}},
        "packages": {"@*/*": every, "**": every},
        "server": {"keepAliveTimeout": 60},
        # The audit middleware forwards `npm audit` to registry.npmjs.org itself,
        # whatever the uplinks: off, so nothing here can reach a real registry.
        "middlewares": {"audit": {"enabled": False}},
        "log": {"type": "stdout", "format": "pretty", "level": "http"},
    }, indent=2)


def start(workdir: Path, uplink_url: str, ca_file: Path) -> Running:
    if not BIN.exists():
        raise missing(BIN, "Verdaccio")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "config.yaml"
    conf.write_text(config(workdir, port, uplink_url))
    log = workdir / "verdaccio.log"
    # Node adds this file to its built-in roots for the uplink's TLS (no npmrc is read).
    env = {**clean_env(), "HOME": str(workdir), "NODE_EXTRA_CA_CERTS": str(ca_file)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN), "--config", str(conf)], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_ready(proc, http_ok(url + "-/ping"), "Verdaccio", log)
    return Running("verdaccio", proc, registry_url=url, workdir=workdir)
