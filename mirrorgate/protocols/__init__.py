"""Registry protocols: what a registry needs beyond mapping URL prefixes.

A rule names its protocol (`protocol: npm`). A protocol may

- rewrite metadata bodies a mirror sent, so that clients record origin URLs
  (`rewrite`);
- name the digest an artifact must have, so that mirror bytes are checked before any
  client or the cache sees them (`expected_digest`);
- answer a request itself (`local_answer`), for probes that must not reach an upstream;
- ask the origin first for mutable pointers (`prefers_origin`: a tag, a signed release
  file), so that mirrors serve only what those pointers name;
- turn a request for a mutable name into one for immutable content (`resolve`: a tag
  into a digest);
- answer a mirror's own authentication challenge (`authorize`), and tell an anonymous
  registry token from a credential (`anonymous`, fed by `observe`);
- pass a mirror's redirect on to the client instead of following it
  (`follows_redirects`), and make the URLs in a mirror's response headers name the
  origin (`rewrite_headers`).

Hooks are pure functions of their arguments except where they fetch through the
`Trusted` they are given; registries without special needs have no protocol.
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
KNOWN: dict[str, tuple[str, ...]] = {
    "npm": (), "pypi-simple": ("files",), "pypi-files": (), "go-sumdb": (), "go-proxy": ("sumdb",),
    "crates-files": ("index",), "docker-registry": (), "docker-auth": (), "maven": (), "rubygems": ("index",),
    "apt": (), "conda": (), "huggingface": (),
}


class Trusted(Interface):
    """Small fetches from trusted upstreams (the origin, or a host a rule names) on a
    protocol's behalf. `fetch(url, headers)` gives the body of a 200, or None; `head`
    gives the status and headers of a HEAD (redirects not followed), or None."""

    async def __call__(self, url: str, headers: dict) -> bytes | None: ...

    async def head(self, url: str, headers: dict) -> "Head | None": ...


@dataclass(frozen=True)
class Head:
    status: int
    headers: dict[str, str]  # lower-cased names


# Kept for the protocols that only fetch documents.
Fetch = Trusted

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

    def serves_whole(self, path: str) -> bool:
        """Whether a Range request at this path is answered with the whole body: a 200
        from one upstream or the cache, with that source's own validators (or a 304).
        For files that clients extend by range and then check whole against the ETag
        (RubyGems' compact index), where bytes appended from another source than the
        client's copy would not fit."""
        return False

    def prefers_origin(self, path: str) -> bool:
        """Whether the origin is asked first, mirrors only when it fails: for mutable
        pointers whose freshness decides what the mirrors are asked for."""
        return False

    async def resolve(self, path: str, method: str, headers: dict, url: str, fetch: Trusted) -> str | None:
        """Another path (below the prefix) to serve this request from, e.g. a tag's
        digest looked up at the origin; None to serve the path as asked. `headers` are
        the client's (lower-cased names); `url` is the canonical URL asked for."""
        return None

    def anonymous(self, headers: dict) -> bool:
        """Whether the credential headers a request carries (lower-cased names) are an
        anonymous token, so that a mirror may serve it without them."""
        return False

    def observes(self, path: str) -> bool:
        """Whether origin responses at this path are shown to `observe`."""
        return False

    def observe(self, path: str, request_headers: dict, status: int, body: bytes) -> None:
        """Sees a small origin response (a token) on its way to the client."""

    def follows_redirects(self, path: str, method: str) -> bool:
        """Whether a mirror's redirect is followed inside the proxy (the client sees where
        it leads) rather than passed on to the client, after `rewrite_headers`: False for
        requests whose client reads metadata off the redirect itself. The origin's
        redirects always reach the client."""
        return True

    def rewrite_headers(self, path: str, status: int, headers: list[tuple[str, str]], page_url: str,
                        mirror_url: str, origin_url: str) -> list[tuple[str, str]] | None:
        """A mirror's response headers as the client should see them (a `Location` or
        `Link` naming the mirror made to name the origin), or None to keep them.
        `page_url`: the URL the mirror answered at (relative references resolve against
        it); `mirror_url`, `origin_url`: the rule's prefixes. Raises RewriteError when
        they cannot be made canonical: the next upstream serves instead."""
        return None

    async def authorize(self, mirror_url: str, path: str, challenge: str | None,
                        fetch: Trusted) -> dict[str, str] | None:
        """Headers that authenticate the proxy itself to a mirror for `path` (below the
        mirror's prefix): called before the first attempt with `challenge` None, and
        after a 401 with its WWW-Authenticate value. None: nothing to add."""
        return None


def registry() -> dict[str, Protocol]:
    """One instance of each protocol, for one relay (some keep state: tokens seen,
    indexes read)."""
    from mirrorgate.protocols import apt, conda, crates, docker, go, huggingface, maven, npm, pypi, rubygems

    tokens = docker.TokenBook()
    return {p.name: p for p in (npm.Npm(), pypi.PypiSimple(), pypi.PypiFiles(), go.GoSumdb(), go.GoProxy(),
                                crates.CratesFiles(), docker.DockerRegistry(tokens), docker.DockerAuth(tokens),
                                maven.Maven(), rubygems.RubyGems(), apt.Apt(), conda.Conda(),
                                huggingface.HuggingFace())}

