"""A fake registry v2 (Docker Hub, or a mirror of it) with a token service of its own
and, like Hub, blobs handed out by redirect to a CDN host.

Every registry request needs a bearer token from the registry's own token service, as
on Hub: anonymous tokens grant pull of public repositories, tokens issued for
credentials also of private ones.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import secrets
import tarfile
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.fakes import Fake

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
USER, PASSWORD = "alice", "s3cret"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Image:
    name: str  # e.g. library/hello
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]  # digest -> bytes (config and layers)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def layer(self) -> str:
        return json.loads(self.manifest)["layers"][0]["digest"]


def image(name: str, tag: str, text: str) -> Image:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        content = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(content), 1767225600, 0o644
        tar.addfile(info, io.BytesIO(content))
    diff = buf.getvalue()
    layer = gzip.compress(diff, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha256(diff)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG, "size": len(config), "digest": sha256(config)},
        "layers": [{"mediaType": LAYER, "size": len(layer), "digest": sha256(layer)}],
    }, indent=3).encode()
    return Image(name, tag, manifest, {sha256(config): config, sha256(layer): layer})


@dataclass
class Registry:
    """`registry` answers /v2/…, `auth` issues tokens, `cdn` serves redirected blobs."""

    registry: Fake
    auth: Fake
    cdn: Fake
    service: str
    private: set[str] = field(default_factory=set)  # repositories that need credentials
    tags: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, tag) -> manifest digest
    manifests: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    tokens: dict[str, bool] = field(default_factory=dict)  # token -> issued for credentials
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry.fallback = self._registry
        self.auth.routes["/token"] = self._token
        self.cdn.fallback = self._cdn

    def add(self, img: Image, private: bool = False) -> None:
        self.tags[(img.name, img.tag)] = img.digest
        self.manifests[img.digest] = img.manifest
        self.blobs.update(img.blobs)
        if private:
            self.private.add(img.name)

    def corrupt(self, digest: str) -> None:
        """Serve wrong bytes under a digest (a broken cache, a tampering mirror)."""
        store = self.blobs if digest in self.blobs else self.manifests
        store[digest] = bytes(b ^ 0x5A for b in store[digest])

    def authorizations(self) -> list[str]:
        return [h.headers["Authorization"] for h in self.registry.hits if "Authorization" in h.headers]

    # ---- the token service -------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        credentialed = False
        if "Authorization" in request.headers:
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if request.headers["Authorization"] != expected:
                return web.json_response({"details": "incorrect username or password"}, status=401)
            credentialed = True
        token = secrets.token_urlsafe(16)
        self.tokens[token] = credentialed
        self.issued.append(token)
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})

    # ---- the registry ------------------------------------------------------------------

    def _challenge(self, scope: str | None, error: str = "") -> web.Response:
        realm = f'Bearer realm="{self.auth.url}token",service="{self.service}"'
        if scope:
            realm += f',scope="{scope}"'
        if error:
            realm += f',error="{error}"'
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": realm})

    def _granted(self, request: web.Request, name: str | None) -> bool:
        value = request.headers.get("Authorization", "")
        token = value[7:] if value.startswith("Bearer ") else None
        if token not in self.tokens:
            return False
        return name not in self.private or self.tokens[token]

    async def _registry(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v2/":
            if not self._granted(request, None):
                return self._challenge(None)
            return web.json_response({})
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if m is None:
            return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)
        name, kind, ref = m.groups()
        if not self._granted(request, name):
            return self._challenge(f"repository:{name}:pull", "insufficient_scope")
        if kind == "blobs":
            if ref not in self.blobs:
                return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
            # As Hub does: the bytes come from a CDN, by a signed URL.
            return web.Response(status=307, headers={"Location": f"{self.cdn.url}blobs/{ref}?sig=x",
                                                     "Docker-Content-Digest": ref})
        digest = ref if ref.startswith("sha256:") else self.tags.get((name, ref))
        body = self.manifests.get(digest or "")
        if body is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        headers = {"Content-Type": MANIFEST_V2, "Docker-Content-Digest": digest, "X-Served-By": self.registry.name}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        return web.Response(body=body, headers=headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"/blobs/(sha256:[0-9a-f]{64})", request.path)
        if m is None or m.group(1) not in self.blobs:
            return web.Response(status=404)
        return web.Response(body=self.blobs[m.group(1)], content_type="application/octet-stream")
