"""Hugging Face, pure: which paths resolve by commit, what the origin's HEAD says a file
must be, and a mirror's Location and Link headers mapped onto the origin."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from mirrorgate.protocols import Digest, Head, RewriteError, registry
from mirrorgate.protocols.huggingface import (GitBlob, HuggingFace, by_commit, canonical_headers, canonical_url,
                                              expected_content, file_metadata, resolved_revision, with_metadata)
from tests.support.huggingface import COMMIT, CONFIG, WEIGHTS, metadata

MIRROR = "https://hf-mirror.example/hf/"
ORIGIN = "https://huggingface.co/"
PAGE = f"{MIRROR}acme/tiny/resolve/main/model.safetensors"
CDN = "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc?X-Amz-Signature=1"


@pytest.mark.parametrize("path, revision", [
    (f"/acme/tiny/resolve/{COMMIT}/config.json", COMMIT),
    (f"/gpt2/resolve/{COMMIT}/config.json", COMMIT),  # legacy ids have no owner
    (f"/datasets/acme/data/resolve/{COMMIT}/train/part-0.parquet", COMMIT),
    (f"/spaces/acme/demo/resolve/{COMMIT}/app.py", COMMIT),
    ("/acme/tiny/resolve/main/config.json", "main"),
    ("/acme/tiny/resolve/refs%2Fpr%2F1/config.json", "refs%2Fpr%2F1"),
    ("/api/models/acme/tiny", None),
    ("/acme/tiny/blob/main/config.json", None),
    ("/acme/tiny/resolve/main/", None),
])
def test_resolve_paths(path, revision):
    assert resolved_revision(path) == revision


@pytest.mark.parametrize("path, checked", [
    (f"/acme/tiny/resolve/{COMMIT}/config.json", True),
    (f"/datasets/acme/data/resolve/{COMMIT}/a/b.bin", True),
    ("/acme/tiny/resolve/main/config.json", False),  # a branch moves
    (f"/acme/tiny/resolve/{COMMIT.upper()}/config.json", False),
    (f"/acme/tiny/resolve/{COMMIT[:12]}/config.json", False),  # short ids are names, not commits
])
def test_only_files_resolved_by_commit_are_checked(path, checked):
    assert by_commit(path) is checked
    assert registry()["huggingface"].checks(path) is checked


def _fd(tmp_path, data: bytes) -> int:
    path = tmp_path / "body"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def test_git_blob_ids_verify_the_content(tmp_path):
    fd = _fd(tmp_path, CONFIG.data)
    try:
        assert GitBlob(bytes.fromhex(CONFIG.blob_id)).verify(fd, len(CONFIG.data))
        assert not GitBlob(hashlib.sha1(CONFIG.data).digest()).verify(fd, len(CONFIG.data))  # the header counts
    finally:
        os.close(fd)
    # git's own id of "hello\n", as `git hash-object` prints it.
    fd = _fd(tmp_path, b"hello\n")
    try:
        assert GitBlob(bytes.fromhex("ce013625030ba8dba906f756967f9e9ca394464a")).verify(fd, 6)
    finally:
        os.close(fd)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_an_lfs_file_must_match_its_linked_sha256():
    assert expected_content(302, _lower(metadata(WEIGHTS))) == Digest("sha256", bytes.fromhex(WEIGHTS.sha256))
    assert expected_content(200, {"x-linked-etag": WEIGHTS.sha256.upper()}) == \
        Digest("sha256", bytes.fromhex(WEIGHTS.sha256))


def test_any_other_file_must_match_its_git_blob_id():
    assert expected_content(200, _lower(metadata(CONFIG))) == GitBlob(bytes.fromhex(CONFIG.blob_id))


@pytest.mark.parametrize("status, headers", [
    (200, {"etag": f'W/"{CONFIG.blob_id}"'}),  # weak: promises nothing about the bytes
    (200, {"etag": '"not-a-hash"'}),
    (302, {"etag": f'"{CONFIG.blob_id}"'}),  # a redirect's own ETag is not the file's
    (404, _lower(metadata(WEIGHTS))),
    (401, {}),
])
def test_nothing_is_expected_without_a_usable_origin_answer(status, headers):
    assert expected_content(status, headers) is None


class OriginHead:
    def __init__(self, answer: Head | None) -> None:
        self.answer, self.asked = answer, []

    async def __call__(self, url, headers):  # documents are never fetched
        raise AssertionError("expect() must not fetch bodies")

    async def head(self, url: str, headers: dict) -> Head | None:
        self.asked.append((url, headers))
        return self.answer


def test_expect_asks_the_origin_with_a_head():
    origin = OriginHead(Head(302, _lower(metadata(WEIGHTS))))
    url = f"{ORIGIN}acme/tiny/resolve/{COMMIT}/model.safetensors"
    got = asyncio.run(registry()["huggingface"].expect(f"/acme/tiny/resolve/{COMMIT}/model.safetensors", url, {},
                                                        origin))
    assert got == Digest("sha256", bytes.fromhex(WEIGHTS.sha256))
    assert origin.asked == [(url, {"Accept-Encoding": "identity"})]
    assert asyncio.run(registry()["huggingface"].expect(f"/acme/tiny/resolve/{COMMIT}/x", url, {},
                                                         OriginHead(None))) is None


@pytest.mark.parametrize("reference, expected", [
    (f"{MIRROR}acme/tiny/resolve/{COMMIT}/model.safetensors", f"{ORIGIN}acme/tiny/resolve/{COMMIT}/model.safetensors"),
    (f"/hf/acme/tiny/resolve/{COMMIT}/model.safetensors", f"{ORIGIN}acme/tiny/resolve/{COMMIT}/model.safetensors"),
    (f"../{COMMIT}/model.safetensors", f"{ORIGIN}acme/tiny/resolve/{COMMIT}/model.safetensors"),
    ("https://HF-MIRROR.example:443/hf/api/x?a=1#f", f"{ORIGIN}api/x?a=1#f"),
    (CDN, None),  # the Hub's CDN stays as it is
    ("https://huggingface.co/acme/tiny/resolve/main/x", None),  # already the origin
    ("http://hf-mirror.example/hf/x", None),  # another scheme is another host
])
def test_urls_naming_the_mirror_are_mapped_onto_the_origin(reference, expected):
    assert canonical_url(reference, PAGE, MIRROR, ORIGIN) == expected


def test_a_url_on_the_mirror_outside_its_prefix_cannot_be_made_canonical():
    with pytest.raises(RewriteError, match="outside"):
        canonical_url("/cdn/objects/abc", PAGE, MIRROR, ORIGIN)


def test_location_and_link_headers_are_rewritten_and_the_rest_kept_in_order():
    headers = [("X-Repo-Commit", COMMIT), ("Location", f"/hf/acme/tiny/resolve/{COMMIT}/model.safetensors"),
               ("Link", (f'<{MIRROR}api/models/acme/tiny/xet-read-token/{COMMIT}>; rel="xet-auth", '
                         '<https://cas-server.xethub.hf.co/reconstruction/x>; rel="xet-reconstruction-info"')),
               ("X-Linked-Etag", '"abc"')]

    out = canonical_headers("/acme/tiny/resolve/main/model.safetensors", 302, headers, PAGE, MIRROR, ORIGIN)

    assert out == [("X-Repo-Commit", COMMIT), ("Location", f"{ORIGIN}acme/tiny/resolve/{COMMIT}/model.safetensors"),
                   ("Link", (f'<{ORIGIN}api/models/acme/tiny/xet-read-token/{COMMIT}>; rel="xet-auth", '
                             '<https://cas-server.xethub.hf.co/reconstruction/x>; rel="xet-reconstruction-info"')),
                   ("X-Linked-Etag", '"abc"')]


def test_headers_without_mirror_urls_are_left_alone():
    headers = [("Location", CDN), ("X-Repo-Commit", COMMIT), ("Content-Length", "0")]
    assert canonical_headers("/acme/tiny/resolve/main/model.safetensors", 302, headers, PAGE, MIRROR, ORIGIN) is None


def test_a_mirror_redirecting_to_the_origin_s_own_url_would_loop():
    path = "/acme/tiny/resolve/main/model.safetensors"
    with pytest.raises(RewriteError, match="very file"):
        canonical_headers(path, 308, [("Location", f"{ORIGIN}acme/tiny/resolve/main/model.safetensors")],
                          PAGE, MIRROR, ORIGIN)
    with pytest.raises(RewriteError, match="very file"):
        canonical_headers(path, 307, [("Location", "/hf/acme/tiny/resolve/main/model.safetensors?x=1")],
                          PAGE, MIRROR, ORIGIN)
    # Elsewhere on the origin (a renamed repository) is a redirect like any other.
    renamed = canonical_headers(path, 307, [("Location", "/hf/acme/renamed/resolve/main/model.safetensors")],
                                PAGE, MIRROR, ORIGIN)
    assert renamed == [("Location", f"{ORIGIN}acme/renamed/resolve/main/model.safetensors")]


@pytest.mark.parametrize("path, method, follows", [
    (f"/acme/tiny/resolve/{COMMIT}/model.safetensors", "HEAD", False),  # metadata is on the redirect
    ("/acme/tiny/resolve/main/model.safetensors", "HEAD", False),
    (f"/acme/tiny/resolve/{COMMIT}/model.safetensors", "GET", True),  # the bytes, checked and kept
    ("/api/models/acme/tiny", "HEAD", True),
])
def test_which_mirror_redirects_reach_the_client(path, method, follows):
    assert registry()["huggingface"].follows_redirects(path, method) is follows


def test_file_metadata_is_taken_from_an_answer_and_replaces_a_mirror_s():
    meta = file_metadata(_lower(metadata(WEIGHTS)))
    assert meta == (("X-Repo-Commit", COMMIT), ("X-Linked-Etag", f'"{WEIGHTS.sha256}"'),
                    ("X-Linked-Size", str(len(WEIGHTS.data))))
    assert with_metadata([("ETag", '"cdn"'), ("x-repo-commit", "0" * 40)], meta) == [("ETag", '"cdn"'), *meta]


def test_a_followed_mirror_answer_by_commit_carries_the_origin_s_metadata():
    proto = HuggingFace()
    path = f"/acme/tiny/resolve/{COMMIT}/model.safetensors"
    url = f"{ORIGIN}acme/tiny/resolve/{COMMIT}/model.safetensors"
    cdn_answer = [("Content-Type", "application/octet-stream"), ("ETag", '"cdn-etag"')]
    # Before the origin was asked, there is nothing to add.
    assert proto.rewrite_headers(path, 200, cdn_answer, CDN, MIRROR, ORIGIN) is None

    asyncio.run(proto.expect(path, url, {}, OriginHead(Head(302, _lower(metadata(WEIGHTS))))))

    out = proto.rewrite_headers(path, 200, cdn_answer, CDN, MIRROR, ORIGIN)
    assert out == [*cdn_answer, ("X-Repo-Commit", COMMIT), ("X-Linked-Etag", f'"{WEIGHTS.sha256}"'),
                   ("X-Linked-Size", str(len(WEIGHTS.data)))]
    # Only a file's own answer: not a redirect, not the same file by branch.
    assert proto.rewrite_headers(path, 302, [("Location", CDN)], PAGE, MIRROR, ORIGIN) is None
    assert proto.rewrite_headers(path.replace(COMMIT, "main"), 200, cdn_answer, CDN, MIRROR, ORIGIN) is None
