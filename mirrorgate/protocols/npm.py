"""npm: a mirror's packuments name the mirror's tarball URLs, which npm writes into
package-lock.json. Every `dist.tarball` is rewritten to the origin's URL for the same
file, in full and abbreviated documents alike; integrity fields stay byte-identical."""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import unquote, urlsplit

from mirrorgate.protocols import Digest, Protocol, RewriteContext, RewriteError

ABBREVIATED = "application/vnd.npm.install-v1+json"


def package_name(path: str) -> str | None:
    """'left-pad' or '@scope/name' from a packument path ('/left-pad', '/@scope%2fname')."""
    name = unquote(path.lstrip("/"))
    parts = name.split("/")
    if len(parts) == 1 and parts[0] and not parts[0].startswith(("@", "-")):
        return parts[0]
    if len(parts) == 2 and parts[0].startswith("@") and parts[1]:
        return name
    return None


def canonical_tarball(origin_base: str, name: str, tarball_url: str) -> str:
    filename = urlsplit(tarball_url).path.rsplit("/", 1)[-1]
    if not filename.endswith(".tgz"):
        raise RewriteError(f"tarball URL {tarball_url!r} does not end in a .tgz file")
    return f"{origin_base.rstrip('/')}/{name}/-/{filename}"


def sri_digest(integrity: str) -> Digest | None:
    """The strongest digest in an SRI string ('sha512-…')."""
    best = None
    for token in integrity.split():
        algo, _, b64 = token.partition("-")
        if algo in ("sha512", "sha384", "sha256", "sha1"):
            try:
                d = Digest(algo, base64.b64decode(b64, validate=True))
            except ValueError:
                continue
            if best is None or ["sha1", "sha256", "sha384", "sha512"].index(algo) > \
                    ["sha1", "sha256", "sha384", "sha512"].index(best.algorithm):
                best = d
    return best


class Npm(Protocol):
    name = "npm"

    def __init__(self) -> None:
        # Canonical tarball URL -> integrity, from every packument the proxy has seen.
        # Rewrites run in worker threads, hence the lock.
        from cachetools import LRUCache
        self.integrity: LRUCache[str, str] = LRUCache(maxsize=200_000)
        self._lock = threading.Lock()

    def wants_rewrite(self, path: str) -> bool:
        return package_name(path) is not None

    def rewrite(self, path: str, content_type: str, body: bytes, ctx: RewriteContext) -> bytes | None:
        name = package_name(path)
        if name is None:
            return None
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("versions"), dict):
            return None
        for version in doc["versions"].values():
            dist = version.get("dist") if isinstance(version, dict) else None
            if isinstance(dist, dict) and "tarball" in dist:
                dist["tarball"] = canonical_tarball(ctx.origin.url, name, dist["tarball"])
        self.remember(doc, ctx.origin.url, name)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def checks(self, path: str) -> bool:
        return "/-/" in path and path.endswith(".tgz")

    async def expect(self, path: str, url: str, options: dict, fetch) -> Digest | None:
        """From the packuments the proxy has seen; failing that, from the origin's."""
        with self._lock:
            known = url in self.integrity
        if not known and "/-/" in path:
            name = path.split("/-/", 1)[0].lstrip("/")
            base = url[: len(url) - len(path)]
            body = await fetch(f"{base}/{name.replace('/', '%2f')}", {"Accept": ABBREVIATED})
            if body is not None:
                try:
                    self.remember(json.loads(body), base + "/", name)
                except (ValueError, AttributeError, RewriteError):
                    pass
        with self._lock:
            integrity = self.integrity.get(url)
        return sri_digest(integrity) if integrity else None

    def remember(self, doc: dict, origin_base: str, name: str) -> None:
        found = {}
        for version in (doc.get("versions") or {}).values():
            dist = version.get("dist") if isinstance(version, dict) else None
            if isinstance(dist, dict) and isinstance(dist.get("integrity"), str) and "tarball" in dist:
                found[canonical_tarball(origin_base, name, dist["tarball"])] = dist["integrity"]
        with self._lock:
            self.integrity.update(found)
