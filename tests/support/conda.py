"""Small real conda packages (.tar.bz2 and .conda) and the repodata.json that lists them,
for a fake conda.anaconda.org channel."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass

import zstandard

MTIME = 1767225600  # fixed, so that a package's bytes (and digest) never change between runs


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    build: str
    subdir: str
    fmt: str  # ".tar.bz2" or ".conda"
    data: bytes
    record: dict  # the repodata entry, digests included

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}{self.fmt}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def path(self, channel: str) -> str:
        """Below the channel host, as conda.anaconda.org lays it out."""
        return f"/{channel}/{self.subdir}/{self.filename}"


def _tar(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), MTIME, 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _zstd_tar(files: dict[str, bytes]) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(_tar(files, "w"))


def package(name: str, version: str, fmt: str = ".conda", subdir: str = "noarch",
            depends: tuple[str, ...] = ()) -> Package:
    """A noarch: generic package holding one text file, installable by conda and rattler."""
    build = "0"
    payload_path = f"share/{name}/VERSION"
    payload = f"{name} {version}\n".encode()
    index = {"name": name, "version": version, "build": build, "build_number": 0, "depends": list(depends),
             "license": "MIT", "noarch": "generic", "subdir": subdir, "timestamp": MTIME * 1000}
    paths = {"paths": [{"_path": payload_path, "path_type": "hardlink",
                        "sha256": hashlib.sha256(payload).hexdigest(), "size_in_bytes": len(payload)}],
             "paths_version": 1}
    info = {"info/index.json": json.dumps(index, indent=2).encode(),
            "info/paths.json": json.dumps(paths, indent=2).encode(),
            "info/files": (payload_path + "\n").encode()}
    if fmt == ".tar.bz2":
        data = _tar({**info, payload_path: payload}, "w:bz2")
    elif fmt == ".conda":
        stem = f"{name}-{version}-{build}"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for member, content in (("metadata.json", b'{"conda_pkg_format_version": 2}'),
                                    (f"pkg-{stem}.tar.zst", _zstd_tar({payload_path: payload})),
                                    (f"info-{stem}.tar.zst", _zstd_tar(info))):
                z.writestr(zipfile.ZipInfo(member, date_time=(2026, 1, 1, 0, 0, 0)), content)
        data = buf.getvalue()
    else:
        raise ValueError(f"unknown package format {fmt!r}")
    record = {**index, "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
              "size": len(data)}
    return Package(name, version, build, subdir, fmt, data, record)


def repodata(subdir: str, packages: list[Package], base_url: str | None = None) -> bytes:
    """A channel subdir's repodata.json; with `base_url`, a CEP-15 (repodata_version 2) one."""
    doc: dict = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "removed": [],
                 "repodata_version": 1}
    if base_url is not None:
        doc["info"]["base_url"] = base_url
        doc["repodata_version"] = 2
    for p in packages:
        if p.subdir == subdir:
            doc["packages" if p.fmt == ".tar.bz2" else "packages.conda"][p.filename] = p.record
    return json.dumps(doc, indent=1, sort_keys=True).encode()
