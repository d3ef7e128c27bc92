"""Small real npm packages (tarballs with package/package.json) and their packuments,
for a fake npm registry and its mirrors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    name: str  # "left-pad" or "@scope/name"
    version: str
    tarball: bytes

    @property
    def filename(self) -> str:
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    @property
    def tarball_path(self) -> str:
        return f"/{self.name}/-/{self.filename}"

    @property
    def packument_path(self) -> str:
        return "/" + self.name.replace("/", "%2f")

    @property
    def integrity(self) -> str:
        return "sha512-" + base64.b64encode(hashlib.sha512(self.tarball).digest()).decode()


def package(name: str, version: str, payload: bytes = b"") -> Package:
    """`payload` (a data file in the package) gives a benchmark's tarballs a real size."""
    manifest = json.dumps({"name": name, "version": version, "main": "index.js"}).encode()
    code = f"module.exports = {json.dumps(name + '@' + version)};\n".encode()
    files = [("package/package.json", manifest), ("package/index.js", code)]
    if payload:
        files.append(("package/data.bin", payload))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for path, content in files:
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), 1767225600, 0o644
            tar.addfile(info, io.BytesIO(content))
    return Package(name, version, buf.getvalue())


def packument(pkgs: list[Package], tarball_base: str) -> bytes:
    """A full packument; every tarball URL starts with `tarball_base` (a registry's or a
    mirror's own host, as real mirrors do)."""
    name = pkgs[0].name
    versions = {
        p.version: {"name": name, "version": p.version, "main": "index.js",
                    "dist": {"tarball": f"{tarball_base.rstrip('/')}{p.tarball_path}", "integrity": p.integrity,
                             "shasum": hashlib.sha1(p.tarball).hexdigest()}}
        for p in pkgs
    }
    latest = pkgs[-1].version
    return json.dumps({"name": name, "dist-tags": {"latest": latest}, "versions": versions,
                       "time": {p.version: "2026-01-01T00:00:00.000Z" for p in pkgs}}).encode()
