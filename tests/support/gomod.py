"""Small Go modules as a module proxy serves them: .info, .mod and .zip, with the h1:
hashes the go command checks (golang.org/x/mod/sumdb/dirhash Hash1)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass


def hash1(files: dict[str, bytes]) -> str:
    summary = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


@dataclass(frozen=True)
class Module:
    path: str  # lowercase, so that no case-encoding is needed
    version: str
    mod: bytes
    zip: bytes
    files: dict

    @property
    def info(self) -> bytes:
        return json.dumps({"Version": self.version, "Time": "2026-01-01T00:00:00Z"}).encode()

    def url(self, suffix: str) -> str:
        return f"/{self.path}/@v/{self.version}{suffix}"

    @property
    def gosum(self) -> str:
        return (f"{self.path} {self.version} {hash1(self.files)}\n"
                f"{self.path} {self.version}/go.mod {hash1({'go.mod': self.mod})}\n")


def module(path: str, version: str, payload: bytes = b"") -> Module:
    """`payload` (a data file in the module) gives a benchmark's zips a real size."""
    mod = f"module {path}\n\ngo 1.19\n".encode()
    name = path.rsplit("/", 1)[-1]
    prefix = f"{path}@{version}/"
    files = {prefix + "go.mod": mod, prefix + f"{name}.go": f'package {name}\n\nconst Version = "{version}"\n'.encode()}
    if payload:
        files[prefix + "data.bin"] = payload
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, content in files.items():
            z.writestr(zipfile.ZipInfo(n, date_time=(2026, 1, 1, 0, 0, 0)), content)
    return Module(path, version, mod, buf.getvalue(), files)
