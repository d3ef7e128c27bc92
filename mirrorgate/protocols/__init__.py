"""Registry protocols: what a registry needs beyond mapping URL prefixes.

A rule names its protocol (`protocol: npm`). A protocol may

- rewrite metadata bodies a mirror sent, so that clients record origin URLs
  (`rewrite`);
- name the digest an artifact must have, so that mirror bytes are checked before any
  client or the cache sees them (`expected_digest`);
- answer a request itself (`local_answer`), for probes that must not reach an upstream.

Each hook is a pure function of its arguments; registries without special needs have
no protocol.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol as Interface

if TYPE_CHECKING:
    from mirrorgate.rules import Prefix

# Protocol names a rules file may give, with the options (URL prefixes) each takes. Kept
# here, free of imports, so that the rules validator can check names without loading
# the protocols themselves.
KNOWN: dict[str, tuple[str, ...]] = {"npm": (), "pypi-simple": ("files",), "pypi-files": (), "go-sumdb": (),
                                     "go-proxy": ("sumdb",), "crates-files": ("index",)}


# Fetches a small document (a packument, a checksum record) from a trusted upstream:
# the body of a 200, or None.
Fetch = Callable[[str, dict], Awaitable[bytes | None]]

CHUNK = 1 << 20


class Expectation(Interface):
    """What a body must be. `verify` reads the complete body from a descriptor; it runs
    in a thread, off the event loop."""

    def verify(self, fd: int, size: int) -> bool: ...


def read_chunks(fd: int, size: int):
    offset = 0
    while offset < size:
        data = os.pread(fd, min(CHUNK, size - offset), offset)
        if not data:
            return
        offset += len(data)
        yield data


@dataclass(frozen=True)
class Digest:
    algorithm: str  # a hashlib name: "blake2b-256", "sha512", "sha256", "sha1"
    value: bytes

    def hasher(self):
        if self.algorithm == "blake2b-256":
            return hashlib.blake2b(digest_size=32)
        return hashlib.new(self.algorithm)

    def verify(self, fd: int, size: int) -> bool:
        h = self.hasher()
        for chunk in read_chunks(fd, size):
            h.update(chunk)
        return h.digest() == self.value

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value.hex()}"


@dataclass(frozen=True)
class LocalAnswer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RewriteContext:
    """Where a metadata body came from and what it must point at instead."""

    page_url: str  # the URL the upstream served the body at (relative links resolve here)
    origin: "Prefix"  # the rule's origin prefix the client asked under
    options: dict = field(default_factory=dict)


class RewriteError(ValueError):
    """The body cannot be made to name origin URLs only; another upstream must serve it."""


class Protocol:
    name = ""
    options: tuple[str, ...] = ()  # option names the rules file may give, each a URL prefix

    def rewrite(self, path: str, content_type: str, body: bytes, ctx: RewriteContext) -> bytes | None:
        """The body to serve instead, or None to serve it unchanged."""
        return None

    def wants_rewrite(self, path: str) -> bool:
        return False

    def checks(self, path: str) -> bool:
        """Whether bodies at this path are checked (so must be held until they are)."""
        return False

    def mirror_path(self, path: str) -> str:
        """The path (below the prefix) to ask mirrors for, where their layout differs."""
        return path

    async def expect(self, path: str, url: str, options: dict, fetch: Fetch) -> Expectation | None:
        """What the body at `url` (canonical) must be, if the protocol can know it. May
        fetch small trusted documents; called only when the body is not in the cache."""
        return None

    def local_answer(self, path: str) -> LocalAnswer | None:
        return None


def registry() -> dict[str, Protocol]:
    from mirrorgate.protocols import crates, go, npm, pypi

    return {p.name: p for p in (npm.Npm(), pypi.PypiSimple(), pypi.PypiFiles(), go.GoSumdb(), go.GoProxy(),
                                crates.CratesFiles())}

