"""Small real Python packages and PEP 503/691 pages for a fake PyPI and its mirrors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    project: str
    version: str
    filename: str
    data: bytes

    @property
    def blake2(self) -> str:
        return hashlib.blake2b(self.data, digest_size=32).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def hash_path(self) -> str:
        """'ab/cd/<60 hex>/<filename>': where PyPI keeps it."""
        h = self.blake2
        return f"{h[:2]}/{h[2:4]}/{h[4:]}/{self.filename}"


def wheel(project: str, version: str, payload: bytes = b"") -> Dist:
    """A pure-Python wheel pip can install: one module that knows its version (and
    `payload`, a data file that gives a benchmark's wheels a real size)."""
    module = project.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        **({f"{module}/data.bin": payload} if payload else {}),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: mirrorgate-tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
    }
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            z.writestr(info, content)
    return Dist(project, version, f"{module}-{version}-py3-none-any.whl", buf.getvalue())


def html_page(project: str, dists: list[Dist], link: callable) -> bytes:
    """PEP 503 project page; `link(dist)` gives each href (before the fragment)."""
    anchors = "\n".join(
        f'    <a href="{link(d)}#sha256={d.sha256}" data-requires-python="&gt;=3.8">{d.filename}</a><br/>'
        for d in dists)
    return (f"<!DOCTYPE html>\n<html>\n  <head><title>Links for {project}</title></head>\n  <body>\n"
            f"    <h1>Links for {project}</h1>\n{anchors}\n  </body>\n</html>\n").encode()


def json_page(project: str, dists: list[Dist], link: callable) -> bytes:
    """PEP 691 project page."""
    return json.dumps({
        "meta": {"api-version": "1.1"}, "name": project,
        "files": [{"filename": d.filename, "url": link(d), "hashes": {"sha256": d.sha256},
                   "requires-python": ">=3.8"} for d in dists],
        "versions": sorted({d.version for d in dists}),
    }).encode()
