"""Registry v2 decisions, pure: which paths are content-addressed, which are mutable
pointers, how a mirror's challenge becomes a token request, and which tokens are
anonymous."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from mirrorgate.protocols import Head, registry
from mirrorgate.protocols.docker import (DockerAuth, DockerRegistry, TokenBook, parse_challenge, parse_token,
                                         repository, token_request_url)

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("path, checked, origin_first, repo", [
    (f"/library/hello/blobs/{D}", True, False, "library/hello"),
    (f"/library/hello/manifests/{D}", True, False, "library/hello"),
    ("/library/hello/manifests/latest", False, True, "library/hello"),
    ("/a/b/c/manifests/v1.2.3-rc_1", False, True, "a/b/c"),
    ("/library/hello/tags/list", False, True, "library/hello"),
    ("/", False, True, None),
    ("/_catalog", False, False, None),
    (f"/library/hello/blobs/{D[:-1]}", False, False, "library/hello"),  # not a whole digest: not checkable
    (f"/Library/hello/blobs/{D}", False, False, None),  # names are lower case
])
def test_paths(path, checked, origin_first, repo):
    p = DockerRegistry(TokenBook())
    assert p.checks(path) is checked
    assert p.prefers_origin(path) is origin_first
    assert repository(path) == repo


def test_expectation_is_the_digest_in_the_path():
    p = DockerRegistry(TokenBook())
    digest = asyncio.run(p.expect(f"/x/blobs/{D}", "", {}, None))
    assert str(digest) == f"sha256:{'ab' * 32}"


def test_challenge_and_token_request():
    c = parse_challenge('Bearer realm="https://auth.m.example/token",service="m.example",scope="repository:a/b:pull"')
    assert c == {"realm": "https://auth.m.example/token", "service": "m.example", "scope": "repository:a/b:pull"}
    assert token_request_url(c, "ignored") == \
        "https://auth.m.example/token?service=m.example&scope=repository%3Aa%2Fb%3Apull"
    bare = parse_challenge('Bearer realm="https://auth.m.example/token?x=1"')
    assert token_request_url(bare, "repository:a:pull") == "https://auth.m.example/token?x=1&scope=repository%3Aa%3Apull"
    assert parse_challenge('Basic realm="registry"') is None
    assert parse_challenge("Bearer error=\"invalid_token\"") is None  # no realm to ask
    assert token_request_url({"realm": "file:///etc/passwd"}, None) is None


@pytest.mark.parametrize("body, expected", [
    (b'{"token": "t1", "expires_in": 300}', ("t1", 300.0)),
    (b'{"access_token": "t2"}', ("t2", 60.0)),  # the spec's default lifetime
    (b'{"token": "t3", "expires_in": 86400}', ("t3", 3600.0)),  # bounded
    (b'{"token": ""}', None), (b"[]", None), (b"not json", None),
])
def test_parse_token(body, expected):
    assert parse_token(body) == expected


def test_only_tokens_seen_issued_without_credentials_are_anonymous():
    book = TokenBook()
    auth, reg = DockerAuth(book), DockerRegistry(book)
    auth.observe("/", {}, 200, json.dumps({"token": "anon", "access_token": "anon2"}).encode())
    auth.observe("/", {"authorization": "Basic eDp5"}, 200, b'{"token": "mine"}')
    auth.observe("/", {}, 401, b'{"token": "refused"}')

    assert reg.anonymous({"authorization": "Bearer anon"})
    assert reg.anonymous({"authorization": "bearer anon2"})
    for headers in ({"authorization": "Bearer mine"}, {"authorization": "Bearer refused"},
                    {"authorization": "Bearer never-seen"}, {"authorization": "Basic YW5vbg=="},
                    {"authorization": "Bearer anon", "cookie": "session=1"}, {}):
        assert not reg.anonymous(headers), headers
    # Fingerprints, not tokens, are what the book holds.
    assert "anon" not in repr(list(book._anonymous.keys())) and hashlib.sha256(b"anon").hexdigest() in book._anonymous


class FakeTrusted:
    def __init__(self, documents=None, head=None):
        self.documents, self._head, self.asked = documents or {}, head, []

    async def __call__(self, url, headers):
        self.asked.append(url)
        return self.documents.get(url)

    async def head(self, url, headers):
        self.asked.append(("HEAD", url, headers))
        return self._head


def test_a_tag_resolves_to_the_digest_the_origin_names():
    p = DockerRegistry(TokenBook())
    trusted = FakeTrusted(head=Head(200, {"docker-content-digest": D}))
    headers = {"authorization": "Bearer t", "accept": "application/vnd.oci.image.index.v1+json", "cookie": "x"}
    assert asyncio.run(p.resolve("/library/hello/manifests/latest", "GET", headers, "https://o/v2/…", trusted)) == \
        f"/library/hello/manifests/{D}"
    # The client's token and Accept go to the origin (its own), nothing else.
    assert trusted.asked[0][2] == {"authorization": "Bearer t", "accept": "application/vnd.oci.image.index.v1+json"}
    for head in (None, Head(401, {}), Head(200, {"docker-content-digest": "md5:00"})):
        assert asyncio.run(p.resolve("/library/hello/manifests/latest", "GET", {}, "u", FakeTrusted(head=head))) is None
    assert asyncio.run(p.resolve("/library/hello/manifests/latest", "HEAD", {}, "u", trusted)) is None
    assert asyncio.run(p.resolve(f"/library/hello/blobs/{D}", "GET", {}, "u", trusted)) is None


def test_mirror_tokens_are_fetched_once_per_repository():
    p = DockerRegistry(TokenBook())
    realm = "https://auth.m.example/token"
    trusted = FakeTrusted({f"{realm}?service=m&scope=repository%3Alibrary%2Fhello%3Apull": b'{"token": "mt"}'})
    path = f"/library/hello/blobs/{D}"

    assert asyncio.run(p.authorize("https://m.example/v2/", path, None, trusted)) is None
    assert asyncio.run(p.authorize("https://m.example/v2/", path, f'Bearer realm="{realm}",service="m"', trusted)) == \
        {"Authorization": "Bearer mt"}
    assert asyncio.run(p.authorize("https://m.example/v2/", "/library/hello/manifests/latest", None, trusted)) == \
        {"Authorization": "Bearer mt"}
    assert len(trusted.asked) == 1
    assert asyncio.run(p.authorize("https://m.example/v2/", path, 'Basic realm="x"', trusted)) is None


def test_both_protocols_share_one_token_book():
    p = registry()
    p["docker-auth"].observe("/", {}, 200, b'{"token": "shared"}')
    assert p["docker-registry"].anonymous({"authorization": "Bearer shared"})
