"""Registry protocols, pure: rewriting mirror metadata to origin URLs and the digests
that mirror bytes must match."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os

import pytest

from mirrorgate.protocols import RewriteContext, RewriteError, registry
from mirrorgate.protocols.go import lookup_hashes, unescape
from mirrorgate.protocols.npm import canonical_tarball, package_name, sri_digest
from mirrorgate.protocols.pypi import canonical_file_url
from mirrorgate.rules import Prefix
from tests.support.gomod import module

P = registry()
HASH = "ab" + "cd" + "e" * 60
FILES = "https://files.pythonhosted.org/packages/"


def ctx(page_url: str, origin: Prefix, **options) -> RewriteContext:
    return RewriteContext(page_url, origin, options)


PYPI = Prefix("https", "pypi.org", 443, "/simple")
NPM = Prefix("https", "registry.npmjs.org", 443, "")


@pytest.mark.parametrize("link, page", [
    (f"../../packages/ab/cd/{'e' * 60}/demo-1.0-py3-none-any.whl#sha256=00ff",
     "https://mirror.example/pypi/web/simple/demo/"),
    (f"https://mirror.example/pypi/packages/ab/cd/{'e' * 60}/demo-1.0-py3-none-any.whl#sha256=00ff",
     "https://mirror.example/simple/demo/"),
    (f"/packages/ab/cd/{'e' * 60}/demo-1.0-py3-none-any.whl#sha256=00ff", "https://m.example/simple/demo/"),
])
def test_pypi_file_links_become_origin_urls(link, page):
    assert canonical_file_url(link, page, FILES) == (
        f"https://files.pythonhosted.org/packages/ab/cd/{'e' * 60}/demo-1.0-py3-none-any.whl#sha256=00ff")


def test_pypi_links_without_the_hash_cannot_be_made_canonical():
    with pytest.raises(RewriteError, match="does not name a file by its hash"):
        canonical_file_url("../../packages/demo/1.0/demo-1.0.tar.gz#sha256=00", "https://n.example/simple/demo/", FILES)


def test_pypi_html_page_keeps_fragments_and_data_attributes():
    page = (b'<!DOCTYPE html><html><body>\n'
            b'<a href="../../packages/ab/cd/' + b"e" * 60 + b'/demo-1.0.tar.gz#sha256=11&amp;x" '
            b'data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256=22">demo-1.0.tar.gz</a>\n'
            b'</body></html>')
    out = P["pypi-simple"].rewrite("/demo/", "text/html", page,
                                   ctx("https://m.example/pypi/web/simple/demo/", PYPI)).decode()
    assert (f'<a href="https://files.pythonhosted.org/packages/ab/cd/{"e" * 60}/demo-1.0.tar.gz#sha256=11&amp;x" '
            'data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256=22">demo-1.0.tar.gz</a>') in out


def test_pypi_json_page_and_custom_files_base():
    doc = {"meta": {"api-version": "1.1"}, "name": "demo",
           "files": [{"filename": "demo-1.0.tar.gz", "url": f"../../packages/ab/cd/{'e' * 60}/demo-1.0.tar.gz",
                      "hashes": {"sha256": "11"}, "requires-python": ">=3.8"}]}
    out = json.loads(P["pypi-simple"].rewrite("/demo/", "application/vnd.pypi.simple.v1+json",
                                              json.dumps(doc).encode(),
                                              ctx("https://m.example/simple/demo/", PYPI,
                                                  files="https://127.0.0.2:9/packages/")))
    assert out["files"][0] == {**doc["files"][0], "url": f"https://127.0.0.2:9/packages/ab/cd/{'e' * 60}/demo-1.0.tar.gz"}
    assert out["meta"] == doc["meta"]


def test_pypi_index_page_is_left_alone():
    assert P["pypi-simple"].rewrite("/", "text/html", b"<a href='demo/'>demo</a>", ctx("https://m/simple/", PYPI)) is None


def expect(proto, path, url="", options=None, documents=None):
    async def fetch(u, headers):
        fetched.append((u, headers))
        return (documents or {}).get(u)
    fetched: list = []
    return asyncio.run(P[proto].expect(path, url, options or {}, fetch)), fetched


def body_fd(tmp_path, data: bytes) -> int:
    f = tmp_path / "body"
    f.write_bytes(data)
    return os.open(f, os.O_RDONLY)


def test_pypi_file_digest_is_its_path(tmp_path):
    data = b"wheel bytes"
    h = hashlib.blake2b(data, digest_size=32).hexdigest()
    d, fetched = expect("pypi-files", f"/{h[:2]}/{h[2:4]}/{h[4:]}/demo-1.0.tar.gz")
    assert d.algorithm == "blake2b-256" and d.value.hex() == h and fetched == []
    assert expect("pypi-files", "/demo/1.0/demo-1.0.tar.gz")[0] is None
    assert P["pypi-files"].checks(f"/{h[:2]}/{h[2:4]}/{h[4:]}/x.whl") and not P["pypi-files"].checks("/x.whl")
    assert d.verify(body_fd(tmp_path, data), len(data))
    assert not d.verify(body_fd(tmp_path, b"wheel bytez"), len(data))


@pytest.mark.parametrize("path, name", [
    ("/left-pad", "left-pad"), ("/@babel/core", "@babel/core"), ("/@babel%2fcore", "@babel/core"),
    ("/@babel%2Fcore", "@babel/core"), ("/left-pad/1.3.0", None), ("/-/whoami", None), ("/", None),
])
def test_npm_package_names(path, name):
    assert package_name(path) == name


def test_npm_packument_tarballs_point_back_at_the_origin():
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(b"tgz").digest()).decode()
    doc = {"name": "@babel/core", "dist-tags": {"latest": "7.24.0"},
           "versions": {"7.24.0": {"name": "@babel/core", "version": "7.24.0", "dist": {
               "tarball": "https://cdn.npmmirror.com/packages/%40babel/core/7.24.0/core-7.24.0.tgz",
               "integrity": integrity, "shasum": "abc", "signatures": [{"keyid": "k", "sig": "s"}]}}}}
    npm = P["npm"]
    out = json.loads(npm.rewrite("/@babel%2fcore", "application/json", json.dumps(doc).encode(),
                                 ctx("https://registry.npmmirror.com/@babel%2fcore", NPM)))
    dist = out["versions"]["7.24.0"]["dist"]
    assert dist["tarball"] == "https://registry.npmjs.org/@babel/core/-/core-7.24.0.tgz"
    assert {k: v for k, v in dist.items() if k != "tarball"} == \
        {k: v for k, v in doc["versions"]["7.24.0"]["dist"].items() if k != "tarball"}
    seen, fetched = expect("npm", "/@babel/core/-/core-7.24.0.tgz", dist["tarball"])
    assert seen.algorithm == "sha512" and seen.value == hashlib.sha512(b"tgz").digest() and fetched == []


def test_npm_integrity_is_fetched_from_the_origin_when_never_seen():
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(b"x1").digest()).decode()
    corgi = json.dumps({"name": "x", "versions": {"1.0.0": {"dist": {
        "tarball": "https://registry.npmjs.org/x/-/x-1.0.0.tgz", "integrity": integrity}}}}).encode()
    url = "https://registry.npmjs.org/x/-/x-1.0.0.tgz"
    d, fetched = expect("npm", "/x/-/x-1.0.0.tgz", url, documents={"https://registry.npmjs.org/x": corgi})
    assert d.value == hashlib.sha512(b"x1").digest()
    assert fetched == [("https://registry.npmjs.org/x", {"Accept": "application/vnd.npm.install-v1+json"})]
    # Unknown anywhere: no expectation, and the body streams unchecked.
    assert expect("npm", "/y/-/y-1.0.0.tgz", "https://registry.npmjs.org/y/-/y-1.0.0.tgz")[0] is None


def test_go_hashes_match_the_go_commands(tmp_path):
    m = module("mods.example/alpha", "v1.0.0")
    lookup = (f"1234\n{m.gosum}\ngo.sum database tree\n5678\nroot=\n\n— sum.golang.org sig\n").encode()
    docs = {"https://sumdb.example/lookup/mods.example/alpha@v1.0.0": lookup}
    z, fetched = expect("go-proxy", "/mods.example/alpha/@v/v1.0.0.zip", options={"sumdb": "https://sumdb.example/"},
                        documents=docs)
    assert fetched[0][0] == "https://sumdb.example/lookup/mods.example/alpha@v1.0.0"
    assert z.verify(body_fd(tmp_path, m.zip), len(m.zip))
    corrupted = bytearray(m.zip)
    corrupted[40] ^= 0xFF
    assert not z.verify(body_fd(tmp_path, bytes(corrupted)), len(corrupted))
    mod, _ = expect("go-proxy", "/mods.example/alpha/@v/v1.0.0.mod", options={"sumdb": "https://sumdb.example/"},
                    documents=docs)
    assert mod.verify(body_fd(tmp_path, m.mod), len(m.mod))
    assert not mod.verify(body_fd(tmp_path, m.mod + b"\n"), len(m.mod) + 1)
    assert expect("go-proxy", "/mods.example/alpha/@v/list", options={"sumdb": "https://s/"})[0] is None
    assert expect("go-proxy", "/mods.example/alpha/@v/v1.0.0.zip")[0] is None  # no sumdb named


def test_go_module_paths_are_unescaped_for_the_record():
    assert unescape("github.com/!azure/go-!auto!rest") == "github.com/Azure/go-AutoRest"
    record = "github.com/Azure/x v1.0.0 h1:AAA=\ngithub.com/Azure/x v1.0.0/go.mod h1:BBB=\n"
    assert lookup_hashes(record, "github.com/Azure/x", "v1.0.0") == {"zip": "h1:AAA=", "mod": "h1:BBB="}


def test_npm_rewrite_refuses_odd_tarball_urls():
    with pytest.raises(RewriteError):
        canonical_tarball("https://registry.npmjs.org/", "x", "https://m.example/x/download?id=3")


def test_sri_picks_the_strongest_digest():
    s1 = "sha1-" + base64.b64encode(hashlib.sha1(b"a").digest()).decode()
    s512 = "sha512-" + base64.b64encode(hashlib.sha512(b"a").digest()).decode()
    assert sri_digest(f"{s1} {s512}").algorithm == "sha512"
    assert sri_digest("md5-xxx") is None


def test_go_sumdb_supported_is_answered_locally():
    assert P["go-sumdb"].local_answer("/supported").status == 200
    assert P["go-sumdb"].local_answer("/latest") is None


@pytest.mark.parametrize("name, path", [("a", "1/a"), ("ab", "2/ab"), ("abc", "3/a/abc"), ("Serde", "se/rd/serde"),
                                        ("serde-json", "se/rd/serde-json")])
def test_crates_index_paths(name, path):
    from mirrorgate.protocols.crates import index_path
    assert index_path(name) == path


def test_crates_files_are_checked_against_the_index_cksum(tmp_path):
    from mirrorgate.protocols.crates import crate_version
    data = b"crate bytes"
    line = json.dumps({"name": "serde-json", "vers": "1.0.0-alpha.1", "cksum": hashlib.sha256(data).hexdigest()})
    other = json.dumps({"name": "serde-json", "vers": "0.9.0", "cksum": "0" * 64})
    docs = {"https://index.example/se/rd/serde-json": f"{other}\n{line}\n".encode()}
    crates = P["crates-files"]
    for path in ("/serde-json/1.0.0-alpha.1/download", "/serde-json/serde-json-1.0.0-alpha.1.crate"):
        assert crate_version(path) == ("serde-json", "1.0.0-alpha.1")
        assert crates.checks(path)
        assert crates.mirror_path(path) == "/serde-json/serde-json-1.0.0-alpha.1.crate"
        d, fetched = expect("crates-files", path, options={"index": "https://index.example/"}, documents=docs)
        assert fetched[0][0] == "https://index.example/se/rd/serde-json"
        assert d.verify(body_fd(tmp_path, data), len(data))
    assert expect("crates-files", "/x/9.9.9/download", options={"index": "https://i/"})[0] is None  # no record
    assert crates.mirror_path("/config.json") == "/config.json" and not crates.checks("/config.json")


def test_go_looks_up_each_module_version_once():
    """The go command asks for a version's .mod and then its .zip; both are checked
    against one record. A lookup that failed is asked again next time."""
    from mirrorgate.protocols.go import GoProxy
    go = GoProxy()
    m = module("mods.example/beta", "v1.0.0")
    opts = {"sumdb": "https://sumdb.example/"}
    calls = []

    async def fetch(url, headers):
        calls.append(url)
        await asyncio.sleep(0)  # let the other requests start while this lookup is out
        return f"1\n{m.gosum}\n".encode() if "beta" in url else None

    async def together():
        return await asyncio.gather(go.expect("/mods.example/beta/@v/v1.0.0.mod", "", opts, fetch),
                                    go.expect("/mods.example/beta/@v/v1.0.0.zip", "", opts, fetch),
                                    go.expect("/mods.example/gone/@v/v1.0.0.zip", "", opts, fetch))

    mod, zipped, gone = asyncio.run(together())
    assert (mod.kind, zipped.kind, gone) == ("mod", "zip", None)
    assert calls == ["https://sumdb.example/lookup/mods.example/beta@v1.0.0",
                     "https://sumdb.example/lookup/mods.example/gone@v1.0.0"]
    assert asyncio.run(go.expect("/mods.example/beta/@v/v1.0.0.zip", "", opts, fetch)).kind == "zip"
    assert asyncio.run(go.expect("/mods.example/gone/@v/v1.0.0.zip", "", opts, fetch)) is None
    assert len(calls) == 3
