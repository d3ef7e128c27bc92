"""Squid as a generic caching HTTPS proxy: it bumps every CONNECT with its own CA, so
clients must trust `Running.extra_ca`, and it verifies the origins and mirrors with
`upstream_ca`.

Squid keeps a response only while it is fresh, and the registries' artifacts usually
arrive without Expires/max-age (the fakes send no validators at all), so freshness comes
from `refresh_pattern`, first match wins. What an admin caching package managers writes:

- Versioned artifacts never change once published (npm `.tgz`, wheels and sdists,
  Go module `.zip`/`.mod`/`.info` under `/@v/`, crates, gems, jars, debs, `/files/` blobs
  such as the 1 GiB benchmark file): fresh for a year whatever the headers say
  (`override-expire override-lastmod ignore-reload ignore-no-store ignore-private`), so
  a client's `Cache-Control: no-cache` or a registry's `private` does not force a refetch.
- Metadata changes (npm packuments, PyPI `/simple/` pages, Go `/@v/list` and `/@latest`):
  no pattern of its own, so the catch-all applies, `. 5 20% 4320`. A response without
  validators is fresh for 5 minutes, as npm (max-age=300) and PyPI (max-age=600) say
  of their own metadata; one with `Cache-Control` keeps its own lifetime.

The cache is a 4 GiB `ufs` dir under `workdir` (the 1.2 GiB workload fits), objects up to
2 GB, and the default 256 MB of memory cache. `-N`: no daemon, no SMP kids, so `proc` is
the worker; its helpers (certificate generator, unlinkd) are its children.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.contenders import Running, free_port, listening, wait_ready
from tests.support.proxy import clean_env

CERTGEN = Path("/usr/lib/squid/security_file_certgen")
ARTIFACTS = (r"(\.(tgz|whl|tar\.gz|tar\.bz2|zip|egg|gem|crate|jar|pom|deb|udeb|rpm|nupkg)"
             r"|/@v/[^/]+\.(mod|info|zip)|/files/.*)$")
IMMUTABLE = "override-expire override-lastmod ignore-reload ignore-no-store ignore-private"


def config(workdir: Path, port: int, upstream_ca: Path) -> str:
    return f"""\
http_port 127.0.0.1:{port} ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB \
tls-cert={workdir / "ca.pem"} tls-key={workdir / "ca.key"}
sslcrtd_program {CERTGEN} -s {workdir / "ssl_db"} -M 4MB
sslcrtd_children 5 startup=1 idle=1
ssl_bump bump all
tls_outgoing_options cafile={upstream_ca}

http_access allow localhost
http_access deny all

# Before cache_dir, whose largest object defaults to it.
maximum_object_size 2 GB
cache_dir ufs {workdir / "cache"} 4096 16 256
cache_mem 256 MB

refresh_pattern -i {ARTIFACTS} 525600 100% 525600 {IMMUTABLE}
refresh_pattern . 5 20% 4320

pid_filename {workdir / "squid.pid"}
access_log stdio:{workdir / "access.log"} squid
cache_log {workdir / "cache.log"}
cache_store_log none
coredump_dir {workdir}
pinger_enable off
shutdown_lifetime 1 seconds
"""


def not_root() -> list[str]:
    """Squid refuses to run as root, and as its `cache_effective_user` it could not reach a
    workdir under a root-only directory (mkdtemp's). In a user namespace where root is
    mapped to `proxy` it is not root, needs no user switch, and still owns what root owns.
    `unshare` execs squid, so the process started is squid itself."""
    if os.geteuid() != 0:
        return []
    return ["unshare", "--user", "--map-user=proxy", "--map-group=proxy"]


def make_ca(workdir: Path) -> Path:
    subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-days", "30", "-subj", "/CN=Squid Benchmark CA", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout", str(workdir / "ca.key"), "-out", str(workdir / "ca.pem")],
                   check=True, capture_output=True, timeout=30)
    return workdir / "ca.pem"


def start(workdir: Path, upstream_ca: Path) -> Running:
    squid = shutil.which("squid") or "/usr/sbin/squid"
    if not Path(squid).exists() or not CERTGEN.exists():
        raise RuntimeError("squid with ssl_bump is not installed (Debian's squid-openssl): "
                           "run bench/install_contenders.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    ca = make_ca(workdir)
    subprocess.run([str(CERTGEN), "-c", "-s", str(workdir / "ssl_db"), "-M", "4MB"], check=True,
                   capture_output=True, timeout=30)
    port = free_port()
    conf = workdir / "squid.conf"
    conf.write_text(config(workdir, port, upstream_ca))
    env = clean_env()
    squid_cmd = [*not_root(), squid, "-N", "-f", str(conf)]
    # -z makes the cache_dir's swap directories and exits.
    subprocess.run([*squid_cmd, "-z"], check=True, capture_output=True, env=env, timeout=60)
    log = workdir / "cache.log"
    with open(workdir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(squid_cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    wait_ready(proc, listening(port), "Squid", log)
    return Running("squid", proc, proxy_url=f"http://127.0.0.1:{port}", extra_ca=ca, workdir=workdir)
