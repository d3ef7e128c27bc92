"""Small real crates (.crate archives) and sparse-index lines for a fake crates.io."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass

from mirrorgate.protocols.crates import index_path


@dataclass(frozen=True)
class Crate:
    name: str
    version: str
    data: bytes

    @property
    def cksum(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def file_path(self) -> str:
        """Below the downloads prefix, as static.crates.io lays them out."""
        return f"/{self.name}/{self.name}-{self.version}.crate"

    @property
    def index_path(self) -> str:
        return "/" + index_path(self.name)

    @property
    def index_line(self) -> bytes:
        return (json.dumps({"name": self.name, "vers": self.version, "deps": [], "cksum": self.cksum,
                            "features": {}, "yanked": False}) + "\n").encode()


def crate(name: str, version: str) -> Crate:
    root = f"{name}-{version}"
    files = {
        f"{root}/Cargo.toml": f'[package]\nname = "{name}"\nversion = "{version}"\nedition = "2021"\n'.encode(),
        f"{root}/src/lib.rs": f'pub const VERSION: &str = "{version}";\n'.encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), 1767225600, 0o644
            tar.addfile(info, io.BytesIO(content))
    return Crate(name, version, buf.getvalue())
