"""Prints what a user needs once the proxy listens: its address, the CA to trust and the
environment to set; and writes a CA bundle that clients can use for every host."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mitmproxy import ctx

from mirrorgate.clientenv import BUNDLE_NAME, bundle_text, system_roots

log = logging.getLogger("mirrorgate")


def write_bundle(confdir: Path, roots: Path) -> Path:
    """System roots plus Mirrorgate's CA. Variables such as SSL_CERT_FILE replace a
    client's whole trust store, so pointing them at our CA alone would break every host
    that passes through untouched."""
    ca = (confdir / "mitmproxy-ca-cert.pem").read_text()
    bundle = confdir / BUNDLE_NAME
    tmp = bundle.with_suffix(".tmp")
    tmp.write_text(bundle_text(roots.read_text(), ca))
    tmp.replace(bundle)
    return bundle


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
        ca = confdir / "mitmproxy-ca-cert.pem"
        roots = system_roots()  # None only without a system store and without certifi
        try:
            if roots is None:
                raise OSError("no system trust store and no certifi")
            bundle = write_bundle(confdir, roots)
        except OSError as e:
            log.warning("Could not write the CA bundle: %s", e)
            bundle = ca
        for host, port, *_ in ctx.master.addons.get("proxyserver").listen_addrs():
            # Printed, not logged: these lines are for the person who started the proxy.
            print("\n".join(banner_lines(host, port, ca, bundle)), flush=True)
