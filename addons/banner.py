"""Prints what a user needs once the proxy listens: its address, the CA to trust and the
environment to set; and writes a CA bundle that clients can use for every host."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mitmproxy import ctx

from mirrorgate.clientenv import BUNDLE_NAME, CA_NAME, SetupError, ensure_bundle, system_roots

log = logging.getLogger("mirrorgate")


def banner_lines(host: str, port: int, ca: Path, bundle: Path) -> list[str]:
    shown = host if host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    proxy = f"http://{shown}:{port}"
    return [
        f"Mirrorgate proxy listening on {host or '*'}:{port}",
        f"CA certificate (trust it in clients): {ca}",
        f"CA bundle (system roots + that CA):   {bundle}",
        "Set in your shell:",
        f"  export HTTPS_PROXY={proxy} HTTP_PROXY={proxy} https_proxy={proxy} http_proxy={proxy}",
        f"  export NODE_EXTRA_CA_CERTS={ca}",
        f"  export SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle} PIP_CERT={bundle}",
        "Every client setting (Maven, apt, Docker, CA install): ./run_proxy.sh env, docs/client-setup.md",
    ]


class Banner:
    def running(self) -> None:
        confdir = Path(os.path.expanduser(ctx.options.confdir))
        ca = confdir / CA_NAME
        bundle = confdir / BUNDLE_NAME
        try:
            # Several processes may start on one confdir (docs/benchmarks.md, past one core).
            ensure_bundle(ca.read_text(), bundle, system_roots(), exact=True)
        except (OSError, SetupError) as e:
            log.warning("Could not write the CA bundle: %s", e)
            bundle = ca
        for host, port, *_ in ctx.master.addons.get("proxyserver").listen_addrs():
            # Printed, not logged: these lines are for the person who started the proxy.
            print("\n".join(banner_lines(host, port, ca, bundle)), flush=True)
