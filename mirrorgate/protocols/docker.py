"""Docker Hub and other registry v2 / OCI distribution registries.

What is mutable comes from the origin; what is content-addressed comes from mirrors,
checked:

- the `/v2/` ping, tags and tag lists go to the origin first, so a client sees the
  origin's own token challenge and a mirror's stale tag never decides what is pulled;
- a manifest GET by tag is resolved to its digest with a HEAD at the origin (cheap, and
  not counted as a pull), then served as the manifest by digest;
- blobs and manifests by digest come from mirrors and must hash to the digest they are
  named by before anyone sees them.

Registry clients always send a bearer token once challenged, even anonymous ones. The
proxy sees the tokens the origin's token service issues (rule `docker-auth`): a token
issued to a request without credentials is anonymous and may be dropped for a mirror,
which gets the proxy's own anonymous token instead (`authorize`). A token issued for
credentials, or one the proxy never saw issued, is a credential: that pull, which may
be of a private image, goes to the origin only.
"""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import urlencode, urlsplit

from cachetools import TLRUCache

from mirrorgate.protocols import Digest, Protocol, Trusted

_NAME = r"(?P<name>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
_DIGEST = r"(?P<digest>sha256:[0-9a-f]{64})"
BY_DIGEST = re.compile(rf"^/{_NAME}/(?P<kind>blobs|manifests)/{_DIGEST}$")
BY_TAG = re.compile(rf"^/{_NAME}/manifests/(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})$")
TAG_LIST = re.compile(rf"^/{_NAME}/tags/list$")
ANY_NAME = re.compile(rf"^/{_NAME}/(?:blobs|manifests|tags)/")

# The distribution token spec's default lifetime, and a bound on what we believe.
DEFAULT_TOKEN_TTL = 60.0
MAX_TOKEN_TTL = 3600.0
# Tokens are reused a little before they expire, not up to the last second.
TOKEN_MARGIN = 10.0


def repository(path: str) -> str | None:
    """The repository name a registry path is about, or None (the ping, the catalog)."""
    m = ANY_NAME.match(path)
    return m.group("name") if m else None


def parse_challenge(value: str) -> dict[str, str] | None:
    """The parameters of a `Bearer` WWW-Authenticate challenge, or None for any other
    scheme (RFC 6750 §3; registries send realm, service and scope)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = dict((k.lower(), v) for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest))
    return params if params.get("realm") else None


def token_request_url(challenge: dict[str, str], scope: str | None) -> str | None:
    """Where to ask for an anonymous token in answer to a challenge; None if the realm is
    not an http(s) URL."""
    realm = challenge["realm"]
    if urlsplit(realm).scheme not in ("https", "http"):
        return None
    query = {k: v for k, v in (("service", challenge.get("service")), ("scope", challenge.get("scope") or scope)) if v}
    return realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm


def parse_token(body: bytes) -> tuple[str, float] | None:
    """The token in a token service's answer and how long to trust it, or None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        return None
    ttl = doc.get("expires_in")
    ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else DEFAULT_TOKEN_TTL
    return token, min(ttl, MAX_TOKEN_TTL)


def bearer(headers: dict) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _fingerprint(token: str) -> str:
    # The book keeps fingerprints, so that a memory dump holds no usable token.
    return hashlib.sha256(token.encode()).hexdigest()


def _expires(_key, ttl: float, now: float) -> float:
    return now + ttl


class TokenBook:
    """Tokens the origin's token service issued to requests without credentials."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self._anonymous: TLRUCache[str, float] = TLRUCache(maxsize=maxsize, ttu=_expires)

    def issued_anonymously(self, token: str, ttl: float) -> None:
        self._anonymous[_fingerprint(token)] = ttl

    def is_anonymous(self, token: str) -> bool:
        return _fingerprint(token) in self._anonymous


class DockerRegistry(Protocol):
    name = "docker-registry"

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens
        # The proxy's own anonymous tokens for mirrors: (mirror, repository) -> token.
        self._mirror_tokens: TLRUCache[tuple[str, str | None], tuple[str, float]] = TLRUCache(
            maxsize=10_000, ttu=lambda _k, v, now: now + max(v[1] - TOKEN_MARGIN, 1.0))

    def checks(self, path: str) -> bool:
        return BY_DIGEST.match(path) is not None

    async def expect(self, path: str, url: str, options: dict, fetch: Trusted) -> Digest | None:
        m = BY_DIGEST.match(path)
        return Digest("sha256", bytes.fromhex(m.group("digest")[7:])) if m else None

    def prefers_origin(self, path: str) -> bool:
        return path == "/" or BY_TAG.match(path) is not None or TAG_LIST.match(path) is not None

    async def resolve(self, path: str, method: str, headers: dict, url: str, fetch: Trusted) -> str | None:
        m = BY_TAG.match(path)
        if method != "GET" or m is None:
            return None
        asked = {k: v for k, v in headers.items() if k in ("authorization", "accept", "user-agent")}
        head = await fetch.head(url, asked)
        digest = head.headers.get("docker-content-digest", "") if head is not None else ""
        if head is None or head.status != 200 or not re.fullmatch(_DIGEST, digest):
            return None  # the origin cannot say: the request goes its usual way, origin first
        return f"/{m.group('name')}/manifests/{digest}"

    def anonymous(self, headers: dict) -> bool:
        if "cookie" in headers or "proxy-authorization" in headers:
            return False
        token = bearer(headers)
        return token is not None and self.tokens.is_anonymous(token)

    async def authorize(self, mirror_url: str, path: str, challenge: str | None,
                        fetch: Trusted) -> dict[str, str] | None:
        name = repository(path)
        key = (mirror_url, name)
        if challenge is None:
            held = self._mirror_tokens.get(key)
            return {"Authorization": f"Bearer {held[0]}"} if held else None
        params = parse_challenge(challenge)
        url = token_request_url(params, f"repository:{name}:pull" if name else None) if params else None
        body = await fetch(url, {}) if url else None
        found = parse_token(body) if body is not None else None
        if found is None:
            return None
        self._mirror_tokens[key] = found
        return {"Authorization": f"Bearer {found[0]}"}


class DockerAuth(Protocol):
    """The origin's token service: its answers to requests without credentials are
    recorded as anonymous tokens. Nothing here is ever cached or sent to a mirror."""

    name = "docker-auth"

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens

    def observes(self, path: str) -> bool:
        return True

    def observe(self, path: str, request_headers: dict, status: int, body: bytes) -> None:
        if status != 200 or "authorization" in request_headers or "cookie" in request_headers:
            return
        found = parse_token(body)
        if found is None:
            return
        token, ttl = found
        self.tokens.issued_anonymously(token, ttl)
        # Hub answers with both names; a client may use either.
        other = json.loads(body).get("access_token")
        if isinstance(other, str) and other and other != token:
            self.tokens.issued_anonymously(other, ttl)
