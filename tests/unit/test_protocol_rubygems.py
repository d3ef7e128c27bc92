"""RubyGems, pure: reading compact index /info lines, the readings of a .gem file name,
which paths are checked or served whole, and where a .gem's checksum comes from."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from mirrorgate.protocols import Digest, registry
from mirrorgate.protocols.rubygems import (GemFile, InfoLine, gem_checksum, gem_readings, index_base,
                                           is_compact_index, parse_info_line)

P = registry()["rubygems"]
A = "a" * 64
B = "b" * 64
C = "c" * 64

# Shaped like rubygems.org's /info/nokogiri: platforms, several requirements, ruby bounds.
INFO = f"""---
1.15.4 mini_portile2:~> 2.8.2,racc:~> 1.4|checksum:{A},ruby:>= 2.7.0
1.15.4-x86_64-linux racc:~> 1.4|checksum:{B},ruby:>= 2.7&< 3.3.dev
1.16.0.rc1 racc:~> 1.4|checksum:{C},ruby:>= 3.0,rubygems:>= 3.3.22
"""


def test_an_info_line_with_dependencies_and_requirements():
    assert parse_info_line(f"1.15.4 mini_portile2:~> 2.8.2,racc:~> 1.4|checksum:{A},ruby:>= 2.7.0") == InfoLine(
        "1.15.4", None, (("mini_portile2", ("~> 2.8.2",)), ("racc", ("~> 1.4",))),
        (("checksum", (A,)), ("ruby", (">= 2.7.0",))))


def test_an_info_line_with_a_platform_and_a_compound_requirement():
    line = parse_info_line(f"1.15.4-x86_64-linux racc:~> 1.4|checksum:{B},ruby:>= 2.7&< 3.3.dev")
    assert (line.version, line.platform, line.checksum) == ("1.15.4", "x86_64-linux", B)
    assert line.requirements[1] == ("ruby", (">= 2.7", "< 3.3.dev"))


def test_an_info_line_without_dependencies():
    assert parse_info_line(f"0.1.0 |checksum:{A}") == InfoLine("0.1.0", None, (), (("checksum", (A,)),))


def test_a_multi_requirement_dependency():
    line = parse_info_line(f"2.0 rack:>= 2.2.4&< 4|checksum:{A}")
    assert line.dependencies == (("rack", (">= 2.2.4", "< 4")),)


@pytest.mark.parametrize("line", ["---", "", "not-a-version |checksum:x", "1.0 rack|checksum:x", "1.0 |checksum"])
def test_lines_that_are_not_versions(line):
    assert parse_info_line(line) is None


def test_a_line_without_a_checksum_has_none():
    assert parse_info_line("1.0 |ruby:>= 2.0").checksum is None


def test_checksum_by_version_and_platform():
    assert gem_checksum(INFO, "1.15.4", None) == A
    assert gem_checksum(INFO, "1.15.4", "x86_64-linux") == B
    assert gem_checksum(INFO, "1.16.0.rc1", None) == C
    assert gem_checksum(INFO, "1.15.4", "java") is None
    assert gem_checksum(INFO, "9.9.9", None) is None


def test_crlf_lines_are_read():
    assert gem_checksum(INFO.replace("\n", "\r\n"), "1.15.4", None) == A


def test_an_index_that_disagrees_with_itself_gives_no_checksum():
    assert gem_checksum(f"---\n1.0 |checksum:{A}\n1.0 |checksum:{B}\n", "1.0", None) is None
    assert gem_checksum(f"---\n1.0 |checksum:{A}\n1.0 |checksum:{A}\n", "1.0", None) == A


def test_a_checksum_that_is_not_sha256_hex_is_not_used():
    assert gem_checksum("---\n1.0 |checksum:abc\n", "1.0", None) is None
    assert gem_checksum(f"---\n1.0 |checksum:{A.upper()}\n", "1.0", None) is None


@pytest.mark.parametrize("path, first", [
    ("/gems/rails-7.1.3.gem", GemFile("rails", "7.1.3", None)),
    ("/gems/net-http-persistent-4.0.2.gem", GemFile("net-http-persistent", "4.0.2", None)),
    ("/gems/nokogiri-1.16.0-x86_64-linux.gem", GemFile("nokogiri", "1.16.0", "x86_64-linux")),
    ("/gems/ffi-1.16.3-x64-mingw-ucrt.gem", GemFile("ffi", "1.16.3", "x64-mingw-ucrt")),
    ("/gems/rails-7.2.0.beta1.gem", GemFile("rails", "7.2.0.beta1", None)),
    ("/gems/3scale-client-2.11.0.gem", GemFile("3scale-client", "2.11.0", None)),
    ("/gems/sqlite3-1.7.0-arm64-darwin.gem", GemFile("sqlite3", "1.7.0", "arm64-darwin")),
])
def test_gem_file_names_are_read_likeliest_first(path, first):
    assert gem_readings(path)[0] == first


def test_ambiguous_gem_file_names_give_every_reading():
    # A name with a version-like segment, and a platform that ends in a number.
    assert gem_readings("/gems/foo-2-bar-1.0.0.gem") == [GemFile("foo-2-bar", "1.0.0", None),
                                                         GemFile("foo", "2", "bar-1.0.0")]
    assert gem_readings("/gems/thin-1.8.2-universal-darwin-21.gem") == [
        GemFile("thin-1.8.2-universal-darwin", "21", None), GemFile("thin", "1.8.2", "universal-darwin-21")]


@pytest.mark.parametrize("path", ["/gems/rails.gem", "/gems/x/rails-1.0.gem", "/gems/rails-1.0.gem.sig",
                                  "/quick/Marshal.4.8/rails-1.0.gemspec.rz", "/info/rails", "/versions"])
def test_other_paths_are_not_gem_files(path):
    assert gem_readings(path) == [] and not P.checks(path)


@pytest.mark.parametrize("path, whole", [
    ("/versions", True), ("/names", True), ("/info/rails", True), ("/info/net-http", True),
    ("/info/", False), ("/info/a/b", False), ("/versions.gz", False), ("/specs.4.8.gz", False),
    ("/gems/rails-7.1.3.gem", False), ("/api/v1/dependencies", False),
])
def test_the_compact_index_is_served_whole(path, whole):
    assert is_compact_index(path) is whole
    assert P.serves_whole(path) is whole


def test_gem_files_are_checked():
    assert P.checks("/gems/rails-7.1.3.gem")


def test_the_index_is_the_rules_option_or_the_requests_origin():
    assert index_base("https://rubygems.org/gems/x-1.0.gem", "/gems/x-1.0.gem",
                      {"index": "https://index.rubygems.org/"}) == "https://index.rubygems.org"
    assert index_base("https://rubygems.org/gems/x-1.0.gem", "/gems/x-1.0.gem", {}) == "https://rubygems.org"
    assert index_base("https://example.org/ruby/gems/x-1.0.gem?a=1", "/gems/x-1.0.gem", {}) == (
        "https://example.org/ruby")


class Documents:
    """A fetch for `expect` that answers from a dict and records what it was asked."""

    def __init__(self, docs: dict[str, bytes]) -> None:
        self.docs, self.asked = docs, []

    async def __call__(self, url: str, headers: dict) -> bytes | None:
        self.asked.append(url)
        return self.docs.get(url)


def expect(path: str, docs: Documents, **options) -> Digest | None:
    return asyncio.run(P.expect(path, "https://rubygems.org" + path, options, docs))


def test_a_gem_must_match_its_info_checksum():
    docs = Documents({"https://index.rubygems.org/info/nokogiri": INFO.encode()})
    assert expect("/gems/nokogiri-1.15.4-x86_64-linux.gem", docs, index="https://index.rubygems.org/") == (
        Digest("sha256", bytes.fromhex(B)))
    assert docs.asked == ["https://index.rubygems.org/info/nokogiri"]


def test_each_reading_is_looked_up_until_the_index_knows_one():
    docs = Documents({"https://rubygems.org/info/foo-2-bar": b"---\n0.9 |\n",
                      "https://rubygems.org/info/foo": f"---\n2-bar-1.0.0 |checksum:{A}\n".encode()})
    assert expect("/gems/foo-2-bar-1.0.0.gem", docs) == Digest("sha256", bytes.fromhex(A))
    assert docs.asked == ["https://rubygems.org/info/foo-2-bar", "https://rubygems.org/info/foo"]
    docs = Documents({"https://rubygems.org/info/foo-2-bar": f"---\n1.0.0 |checksum:{C}\n".encode()})
    assert expect("/gems/foo-2-bar-1.0.0.gem", docs) == Digest("sha256", bytes.fromhex(C))
    assert docs.asked == ["https://rubygems.org/info/foo-2-bar"]


def test_no_checksum_when_the_index_cannot_be_read_or_lacks_the_version():
    assert expect("/gems/rails-7.1.3.gem", Documents({})) is None
    assert expect("/gems/rails-7.1.3.gem", Documents({"https://rubygems.org/info/rails": INFO.encode()})) is None


def test_the_digest_is_of_the_whole_gem(tmp_path):
    data = b"a gem's bytes"
    info = f"---\n1.0.0 |checksum:{hashlib.sha256(data).hexdigest()}\n".encode()
    digest = expect("/gems/x-1.0.0.gem", Documents({"https://rubygems.org/info/x": info}))
    f = tmp_path / "x.gem"
    f.write_bytes(data)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert digest.verify(fd, len(data))
        assert not digest.verify(fd, len(data) - 1)
    finally:
        os.close(fd)
