"""Small real gems (built by `gem build`) and a fake rubygems.org: the compact index
(`/versions`, `/info/<gem>`, `/names`) served as rubygems.org serves it, and `.gem`
files."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.support.fakes import WAIT, Fake

# Fixed, so that a gem built twice has the same bytes (gem build honours it).
SOURCE_DATE_EPOCH = "1767225600"


@dataclass(frozen=True)
class Gem:
    name: str
    version: str
    deps: tuple[tuple[str, str], ...]  # (name, requirement)
    data: bytes

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.gem"

    @property
    def path(self) -> str:
        return f"/gems/{self.file_name}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def info_line(self) -> str:
        deps = ",".join(f"{n}:{r}" for n, r in self.deps)
        return f"{self.version} {deps}|checksum:{self.sha256}\n"


def build_gem(workdir: Path, name: str, version: str, deps: tuple[tuple[str, str], ...] = ()) -> Gem:
    """A real gem from a generated gemspec, built by the installed `gem`."""
    src = workdir / f"{name}-{version}"
    (src / "lib").mkdir(parents=True)
    module = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    (src / "lib" / f"{name.replace('-', '_')}.rb").write_text(f'module {module}\n  VERSION = "{version}"\nend\n')
    (src / f"{name}.gemspec").write_text(
        "Gem::Specification.new do |s|\n"
        f"  s.name = {name!r}\n  s.version = {version!r}\n  s.summary = 'Mirrorgate test gem'\n"
        f"  s.authors = ['Mirrorgate']\n  s.license = 'MIT'\n  s.homepage = 'https://example.invalid/'\n"
        f"  s.files = ['lib/{name.replace('-', '_')}.rb']\n"
        + "".join(f"  s.add_dependency {n!r}, {r!r}\n" for n, r in deps)
        + "end\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "LANG": "C.UTF-8",
           "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "GEMRC": os.devnull}
    out = subprocess.run(["gem", "build", f"{name}.gemspec"], cwd=src, env=env, capture_output=True, text=True,
                         timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr
    return Gem(name, version, deps, (src / f"{name}-{version}.gem").read_bytes())


def md5_etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


@dataclass
class CompactIndex:
    """A registry's compact index, kept as rubygems.org keeps it: `/versions` is written
    once (its `created_at` line dates that) and then only appended to, one line per new
    version naming the MD5 of the gem's grown `/info` file; `/info/<gem>` files only
    grow."""

    created_at: str
    info: dict[str, bytes] = field(default_factory=dict)
    versions: bytes = b""

    @classmethod
    def of(cls, created_at: str, gems: list[Gem]) -> CompactIndex:
        index = cls(created_at)
        by_name: dict[str, list[Gem]] = {}
        for g in gems:
            by_name.setdefault(g.name, []).append(g)
        lines = []
        for name in sorted(by_name):
            index.info[name] = b"---\n" + "".join(g.info_line for g in by_name[name]).encode()
            versions = ",".join(g.version for g in by_name[name])
            lines.append(f"{name} {versions} {hashlib.md5(index.info[name]).hexdigest()}\n")
        index.versions = f"created_at: {created_at}\n---\n{''.join(lines)}".encode()
        return index

    def add(self, gem: Gem) -> None:
        self.info[gem.name] = self.info.get(gem.name, b"---\n") + gem.info_line.encode()
        self.versions += f"{gem.name} {gem.version} {hashlib.md5(self.info[gem.name]).hexdigest()}\n".encode()

    def files(self) -> dict[str, bytes]:
        names = b"---\n" + "".join(f"{n}\n" for n in sorted(self.info)).encode()
        return {"/versions": self.versions, "/names": names, **{f"/info/{n}": b for n, b in self.info.items()}}


def index_file(index: CompactIndex, path: str):
    """rubygems.org's way with a compact index file: ETag is the quoted MD5 of the whole
    file (Bundler checks its copy against it), Repr-Digest its SHA-256; If-None-Match
    answers 304, `Range: bytes=N-` 206 (or 416), and gzip only to a client that asks.
    The body is read from `index` at each request, so a test can grow it."""
    async def behaviour(request: web.Request) -> web.StreamResponse:
        body = index.files()[path]
        headers = {"ETag": md5_etag(body), "Accept-Ranges": "bytes", "Cache-Control": "max-age=60, public",
                   "Repr-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:",
                   "Content-Type": "text/plain; charset=utf-8", "Vary": "Accept-Encoding"}
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        if (rng := request.headers.get("Range")) is not None:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1)) if m else 0
            if start >= len(body):
                return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(body)}"})
            return web.Response(status=206, body=body[start:], headers={
                **headers, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzip.compress(body, mtime=0), headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=body, headers=headers)
    return behaviour


def publish(fake: Fake, prefix: str, index: CompactIndex, gems: list[Gem]) -> None:
    """Serve `index` and `gems` on `fake` below `prefix` ("" or "/rubygems")."""
    for path in index.files():
        fake.routes[prefix + path] = index_file(index, path)
    for g in gems:
        fake.serve(prefix + g.path, g.data, headers={"Content-Type": "application/octet-stream",
                                                      "ETag": f'"{g.sha256[:16]}"'})
