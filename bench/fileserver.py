"""A plain HTTPS file server in a process of its own: the physical limit the benchmarks
compare Mirrorgate with, and the mirror behind it.

    python bench/fileserver.py ROOT CERT KEY HOST    # prints "listening PORT SERVER"; serves ROOT at /files/

nginx (Debian: nginx-light) when installed, as the fast static server people actually
run; otherwise aiohttp, which is several times slower for large files over TLS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from aiohttp import web

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
user root;
error_log stderr warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /files/ {{ alias {root}/; }}
    }}
}}
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_nginx(nginx: str, root: Path, cert: str, key: str, host: str) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-nginx-")
    port = free_port(host)
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, host=host, port=port, cert=cert, key=key, root=root.resolve()))
    print(f"listening {port} nginx", flush=True)
    os.execv(nginx, [nginx, "-c", str(conf), "-p", tmp, "-e", "stderr"])


async def run_aiohttp(root: Path, cert: str, key: str, host: str) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def serve(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["name"]).resolve()
        if path.parent != root.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=tls, backlog=1024)
    await site.start()
    print(f"listening {site._server.sockets[0].getsockname()[1]} aiohttp", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    root, cert, key, host = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    nginx = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if nginx:
        run_nginx(nginx, root, cert, key, host)
    else:
        asyncio.run(run_aiohttp(root, cert, key, host))
