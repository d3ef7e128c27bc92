"""Conda, pure: which paths are packages and repodata, the sha256 map read from
repodata.json, and CEP-15 base_url rewriting."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import json

import pytest
import zstandard

from mirrorgate.protocols import Digest, RewriteContext, RewriteError, conda, registry
from mirrorgate.protocols.conda import (canonical_base_url, leading_info_end, mentions_base_url, package_file,
                                        repodata_compression, repodata_url, rewrite_base_urls, rewrite_repodata,
                                        sha256_map)
from mirrorgate.rules import Prefix
from tests.support.conda import package, repodata

ORIGIN = Prefix("https", "conda.anaconda.org", 443, "")
MIRROR_PAGE = "https://mirror.example/anaconda/cloud/conda-forge/noarch/repodata.json"
SHA_A, SHA_B = "a" * 64, "b" * 64


@pytest.mark.parametrize("path, name", [
    ("/conda-forge/noarch/numpy-1.26.4-py312h8753938_0.conda", "numpy-1.26.4-py312h8753938_0.conda"),
    ("/conda-forge/linux-64/zlib-1.3.1-h4ab18f5_1.tar.bz2", "zlib-1.3.1-h4ab18f5_1.tar.bz2"),
    ("/conda-forge/label/dev/osx-arm64/x-1-0.conda", "x-1-0.conda"),
    ("/linux-64/x-1-0.conda", "x-1-0.conda"),  # a rule whose prefix is the channel itself
    ("/conda-forge/noarch/pkg-1.0%2Bcpu-0.conda", "pkg-1.0+cpu-0.conda"),
    ("/conda-forge/noarch/repodata.json", None),
    ("/conda-forge/noarch/repodata.json.bz2", None),
    ("/x-1-0.conda", None),  # no subdir
    ("/conda-forge/noarch/.conda", None),
    ("/conda-forge/noarch/x-1-0.tar.gz", None),
])
def test_package_files_are_told_from_the_rest(path, name):
    assert package_file(path) == name


@pytest.mark.parametrize("path, compression", [
    ("/conda-forge/noarch/repodata.json", ""),
    ("/conda-forge/linux-64/repodata.json.zst", ".zst"),
    ("/conda-forge/linux-64/repodata.json.bz2", ".bz2"),
    ("/conda-forge/linux-64/current_repodata.json", ""),
    ("/conda-forge/linux-64/repodata_from_packages.json.zst", ".zst"),
    ("/conda-forge/linux-64/repodata.jlap", None),
    ("/conda-forge/linux-64/repodata_shards.msgpack.zst", None),
    ("/conda-forge/linux-64/x-1-0.conda", None),
])
def test_repodata_variants(path, compression):
    assert repodata_compression(path) == compression


def test_the_repodata_of_a_package_is_its_subdir_s():
    assert repodata_url("https://conda.anaconda.org/conda-forge/noarch/x-1-0.conda?token=1") == \
        "https://conda.anaconda.org/conda-forge/noarch/repodata.json"


def test_sha256_map_reads_both_package_sections():
    a, b = package("demo-a", "1.0", ".conda"), package("demo-b", "2.0", ".tar.bz2")
    found = sha256_map(repodata("noarch", [a, b]))
    assert found == {a.filename: bytes.fromhex(a.sha256), b.filename: bytes.fromhex(b.sha256)}


def test_sha256_map_skips_what_it_cannot_use_and_is_not_fooled_by_other_keys():
    doc = {
        "info": {"subdir": "noarch", "packages": {"decoy-1-0.conda": {"sha256": SHA_A}}},
        "packages": {"old-1-0.tar.bz2": {"md5": "0" * 32}, "odd-1-0.tar.bz2": {"sha256": "not hex"}},
        "packages.conda": {"x\u00e9-1-0.conda": {"sha256": SHA_B.upper()}, "y-1-0.conda": [1, 2]},
        "removed": ["gone-1-0.conda"],
        "repodata_version": 1,
    }
    body = json.dumps(doc, indent=3, ensure_ascii=True).encode()
    assert sha256_map(body) == {"x\u00e9-1-0.conda": bytes.fromhex(SHA_B)}


def test_sha256_map_of_compact_and_empty_documents():
    assert sha256_map(b'{"packages":{},"packages.conda":{"a-1-0.conda":{"sha256":"' + SHA_A.encode() + b'"}}}') == \
        {"a-1-0.conda": bytes.fromhex(SHA_A)}
    assert sha256_map(b"{}") == {}


@pytest.mark.parametrize("body", [b"", b"[]", b'{"packages": {"a": }', b"<html>not json</html>", b"\xff\xfe"])
def test_sha256_map_refuses_what_is_not_repodata(body):
    with pytest.raises(ValueError):
        sha256_map(body)


@pytest.mark.parametrize("base_url, expected", [
    ("https://mirror.example/anaconda/cloud/conda-forge/noarch/", "https://conda.anaconda.org/conda-forge/noarch/"),
    ("https://MIRROR.example:443/anaconda/cloud/conda-forge/noarch", "https://conda.anaconda.org/conda-forge/noarch"),
    ("https://mirror.example/anaconda/cloud/conda-forge/linux-64/",
     "https://conda.anaconda.org/conda-forge/linux-64/"),
    ("https://mirror.example/anaconda/cloud/", "https://conda.anaconda.org/"),
    ("./", None),  # relative entries resolve against where the client fetched the repodata
    ("../noarch/", None),
    ("https://cdn.example/conda-forge/noarch/", None),  # another host: where the packages really are
    ("http://mirror.example/anaconda/cloud/conda-forge/noarch/", None),  # another scheme is another origin
])
def test_a_base_url_naming_the_mirror_becomes_the_origin_s(base_url, expected):
    assert canonical_base_url(base_url, MIRROR_PAGE, "https://conda.anaconda.org/conda-forge/noarch/",
                              "https://conda.anaconda.org/") == expected


@pytest.mark.parametrize("base_url", ["https://mirror.example/anaconda/", "https://mirror.example/pkgs/x/"])
def test_a_base_url_outside_the_mirror_s_copy_cannot_be_made_canonical(base_url):
    with pytest.raises(RewriteError, match="outside"):
        canonical_base_url(base_url, MIRROR_PAGE, "https://conda.anaconda.org/conda-forge/noarch/",
                           "https://conda.anaconda.org/")


def test_a_base_url_below_an_origin_prefix_with_a_path():
    assert canonical_base_url("https://m.example/cf/noarch/", "https://m.example/cf/noarch/repodata.json",
                              "https://conda.anaconda.org/conda-forge/noarch/",
                              "https://conda.anaconda.org/conda-forge/") == \
        "https://conda.anaconda.org/conda-forge/noarch/"


def test_rewriting_leaves_every_other_byte_alone():
    body = (b'{\n "info": {\n  "base_url" :  "https://mirror.example/anaconda/cloud/conda-forge/noarch/",\n'
            b'  "subdir": "noarch"\n },\n "packages": {"a-1-0.tar.bz2": {"sha256": "' + SHA_A.encode() + b'"}}\n}')
    out = rewrite_base_urls(body, MIRROR_PAGE, "https://conda.anaconda.org/conda-forge/noarch/",
                            "https://conda.anaconda.org/")
    assert out == body.replace(b"https://mirror.example/anaconda/cloud/", b"https://conda.anaconda.org/")
    assert rewrite_base_urls(out, MIRROR_PAGE, "https://conda.anaconda.org/conda-forge/noarch/",
                             "https://conda.anaconda.org/") is None
    assert rewrite_base_urls(b'{"info": {"base_url": "./"}}', MIRROR_PAGE,
                             "https://conda.anaconda.org/conda-forge/noarch/", "https://conda.anaconda.org/") is None


MIRROR_BASE = b'"https://mirror.example/anaconda/cloud/conda-forge/noarch/"'
ORIGIN_BASE = b'"https://conda.anaconda.org/conda-forge/noarch/"'


def test_the_leading_info_object_is_found_in_the_document_s_first_bytes():
    doc = b' {"info": {"subdir": "noarch", "note": "{\\"}"}, "packages": {}}'
    assert doc[:leading_info_end(doc)].endswith(b'"}"}')
    assert leading_info_end(b'{"packages": {}, "info": {}}') is None
    assert leading_info_end(b'{"info": {"subdir": "noa') is None  # cut short
    assert leading_info_end(b"\x28\xb5\x2f\xfd") is None


def test_with_info_first_only_its_base_url_is_cep_15_s():
    doc = (b'{"info": {"base_url": ' + MIRROR_BASE + b'}, "packages": {"a-1-0.tar.bz2": {"base_url": '
           + MIRROR_BASE + b"}}}")
    args = (MIRROR_PAGE, "https://conda.anaconda.org/conda-forge/noarch/", "https://conda.anaconda.org/")
    assert rewrite_repodata(doc, *args) == doc.replace(MIRROR_BASE, ORIGIN_BASE, 1)
    # Written in another order, the info object is found wherever it is.
    late = b'{"packages": {}, "info": {"base_url": ' + MIRROR_BASE + b"}}"
    assert rewrite_repodata(late, *args) == late.replace(MIRROR_BASE, ORIGIN_BASE)


def test_a_compressed_document_is_scanned_for_base_url_in_chunks():
    text = b'{"packages": {' + b'"x": 1, ' * 300_000 + b'"y": {"base_url": "./"}}}'
    assert mentions_base_url(zstandard.ZstdDecompressor().stream_reader(zstandard.compress(text)))
    assert not mentions_base_url(zstandard.ZstdDecompressor().stream_reader(zstandard.compress(text[:-30] + b"}}")))
    assert mentions_base_url(zstandard.ZstdDecompressor().stream_reader(b""), head=b'{"base_url": 1}')


def _ctx(page: str = MIRROR_PAGE) -> RewriteContext:
    return RewriteContext(page, ORIGIN, {})


@pytest.mark.parametrize("suffix, compress, decompress", [
    ("", lambda b: b, lambda b: b),
    (".zst", zstandard.compress, lambda b: zstandard.ZstdDecompressor().stream_reader(b).read()),
    (".bz2", bz2.compress, bz2.decompress),
])
def test_repodata_in_each_variant_is_rewritten(suffix, compress, decompress):
    proto = registry()["conda"]
    path = f"/conda-forge/noarch/repodata.json{suffix}"
    mirror_doc = repodata("noarch", [package("demo-a", "1.0")],
                          base_url="https://mirror.example/anaconda/cloud/conda-forge/noarch/")
    assert proto.wants_rewrite(path)

    out = proto.rewrite(path, "application/octet-stream", compress(mirror_doc), _ctx(MIRROR_PAGE + suffix))

    doc = json.loads(decompress(out))
    assert doc["info"]["base_url"] == "https://conda.anaconda.org/conda-forge/noarch/"
    assert doc["packages.conda"] == json.loads(mirror_doc)["packages.conda"]
    plain = compress(repodata("noarch", [package("demo-a", "1.0")]))
    assert proto.rewrite(path, "application/json", plain, _ctx(MIRROR_PAGE + suffix)) is None


def test_packages_are_not_rewritten_and_repodata_is_not_checked():
    proto = registry()["conda"]
    assert not proto.wants_rewrite("/conda-forge/noarch/x-1-0.conda")
    assert proto.checks("/conda-forge/noarch/x-1-0.conda")
    assert not proto.checks("/conda-forge/noarch/repodata.json")


class Origin:
    """A trusted fetch that counts what it is asked for."""

    def __init__(self, body: bytes | None, gate: asyncio.Event | None = None) -> None:
        self.body, self.asked, self.gate = body, [], gate

    async def __call__(self, url: str, headers: dict) -> bytes | None:
        self.asked.append((url, headers))
        if self.gate is not None:
            await self.gate.wait()
        return self.body


PKG_URL = "https://conda.anaconda.org/conda-forge/noarch/{}"


def test_expect_reads_the_origin_repodata_once_for_many_packages():
    a, b = package("demo-a", "1.0"), package("demo-b", "2.0", ".tar.bz2")
    origin = Origin(repodata("noarch", [a, b]))

    async def run():
        proto = conda.Conda()
        gate = origin.gate = asyncio.Event()
        pending = [asyncio.ensure_future(proto.expect(p.path("conda-forge"), PKG_URL.format(p.filename), {}, origin))
                   for p in (a, b)]
        await asyncio.sleep(0)
        gate.set()
        first = await asyncio.gather(*pending)
        later = await proto.expect(a.path("conda-forge"), PKG_URL.format(a.filename), {}, origin)
        return first, later

    (got_a, got_b), later = asyncio.run(run())
    assert got_a == Digest("sha256", bytes.fromhex(a.sha256)) == later
    assert got_b == Digest("sha256", bytes.fromhex(b.sha256))
    assert origin.asked == [("https://conda.anaconda.org/conda-forge/noarch/repodata.json",
                             {"Accept-Encoding": "gzip"})]


def test_a_package_the_repodata_does_not_list_is_unchecked_until_it_is_worth_asking_again(monkeypatch):
    a, new = package("demo-a", "1.0"), package("demo-new", "1.0")
    origin = Origin(repodata("noarch", [a]))
    clock = [1000.0]
    monkeypatch.setattr(conda, "_clock", lambda: clock[0])

    async def run():
        proto = conda.Conda()

        def ask():
            return proto.expect(new.path("conda-forge"), PKG_URL.format(new.filename), {}, origin)

        first = await ask()
        clock[0] += conda.REFRESH_AFTER / 2
        soon = await ask()
        origin.body = repodata("noarch", [a, new])
        clock[0] += conda.REFRESH_AFTER
        later = await ask()
        return first, soon, later

    first, soon, later = asyncio.run(run())
    assert first is None and soon is None and len(origin.asked) == 2
    assert later == Digest("sha256", bytes.fromhex(new.sha256))


@pytest.mark.parametrize("body", [None, b"not json", gzip.compress(b"{}")])
def test_no_usable_repodata_means_no_expectation(body):
    a = package("demo-a", "1.0")
    assert asyncio.run(conda.Conda().expect(a.path("conda-forge"), PKG_URL.format(a.filename), {}, Origin(body))) \
        is None


def test_sha256_map_is_what_the_package_bytes_hash_to():
    a = package("demo-a", "1.0", ".tar.bz2")
    assert sha256_map(repodata("noarch", [a]))[a.filename] == hashlib.sha256(a.data).digest()
