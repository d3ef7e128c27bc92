"""A fake Hugging Face Hub: repository files answered at `/<repo>/resolve/<rev>/<file>` the
way huggingface.co answers them, for origins and mirrors alike.

- An LFS file: HEAD and GET answer 302 to a CDN (a signed URL), with `X-Repo-Commit`,
  `X-Linked-Etag` (the sha256 of the content) and `X-Linked-Size`.
- Any other file: 200 with the body, `X-Repo-Commit` and `ETag` = its git blob id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from aiohttp import web

COMMIT = "4f1c0ffee0ddba11c0de5eed0123456789abcdef"
REPO = "acme/tiny-model"


@dataclass(frozen=True)
class RepoFile:
    name: str  # path in the repository
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        """git's object id for the file: sha1 of `blob <size>\\0` and the content."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    def resolve(self, revision: str = COMMIT, repo: str = REPO) -> str:
        return f"/{repo}/resolve/{revision}/{self.name}"

    @property
    def cdn_path(self) -> str:
        """Where a CDN keeps the LFS object: by its sha256, as cdn-lfs.hf.co does."""
        return f"/repos/{self.sha256[:2]}/{self.sha256[2:4]}/{self.sha256}"


CONFIG = RepoFile("config.json", b'{"model_type": "tiny", "hidden_size": 8}\n', lfs=False)
# Large enough that a body arrives in several reads, small enough for a loopback test.
WEIGHTS = RepoFile("model.safetensors", bytes(range(256)) * 1200 + b"tail", lfs=True)
FILES = (CONFIG, WEIGHTS)


def metadata(f: RepoFile, commit: str = COMMIT) -> dict[str, str]:
    if f.lfs:
        return {"X-Repo-Commit": commit, "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data)),
                "ETag": f'"{f.sha256}"'}
    return {"X-Repo-Commit": commit, "ETag": f'"{f.blob_id}"', "Content-Type": "application/json"}


def resolve_answer(f: RepoFile, location: str | None = None, extra: dict[str, str] | None = None,
                   body: bytes | None = None):
    """The Hub's answer to HEAD and GET of a resolve URL: 302 to `location` for an LFS
    file, the file itself (or `body` instead, for a mirror that corrupts it) otherwise."""
    async def behaviour(request: web.Request) -> web.StreamResponse:
        headers = {**metadata(f), **(extra or {})}
        if f.lfs:
            return web.Response(status=302, headers={**headers, "Location": location or ""})
        return web.Response(body=f.data if body is None else body, headers=headers)
    return behaviour


def cdn_answer(data: bytes):
    """A CDN serving an object at a signed URL (the query is accepted and ignored)."""
    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream",
                                                "ETag": f'"{hashlib.md5(data).hexdigest()}"'})
    return behaviour


def redirect(status: int, location: str, extra: dict[str, str] | None = None):
    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location, **(extra or {})})
    return behaviour
