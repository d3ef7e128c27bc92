"""The apt protocol, pure: where a path sits in an archive, Release and Packages parsing,
the digests mirror bytes must match, and the bounded book of package digests."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import lzma
import tempfile

import pytest

from mirrorgate.protocols import Digest, registry
from mirrorgate.protocols.apt import (
    Apt,
    CheckedIndex,
    PackageBook,
    Place,
    archive_root,
    by_hash_digest,
    index_kind,
    package_digests,
    place,
    release_hashes,
    signed_text,
    source_digests,
)

ROOT = "http://deb.debian.org/debian"
H1, H2, H3 = (hashlib.sha256(x).hexdigest() for x in (b"one", b"two", b"three"))

PACKAGES = f"""\
Package: hello
Version: 2.10-3
Architecture: amd64
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 53092
SHA256: {H1}
Description: example package
 with a continuation line
 Filename: pool/not/a/field.deb

Package: libstdc++6
Filename: pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb
MD5sum: 0123456789abcdef0123456789abcdef
SHA256: {H2}

Package: no-digest
Filename: pool/main/n/no-digest/no-digest_1_all.deb

Package: last-without-blank-line
Filename: pool/main/l/last/last_1~rc1_all.deb
SHA256: {H3}""".encode()

RELEASE = f"""\
Origin: Debian
Codename: bookworm
Acquire-By-Hash: yes
MD5Sum:
 0123456789abcdef0123456789abcdef   1234 main/binary-amd64/Packages
SHA256:
 {H1}   53092 main/binary-amd64/Packages
 {H2}    1234 main/binary-amd64/Packages.xz
 {H3}      99 main/i18n/Translation-en
"""


@contextlib.contextmanager
def body(data: bytes):
    """A file holding `data`, as a fill's checked body is."""
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        yield f


class Origin:
    """The trusted fetch: documents by URL, and every URL asked for."""

    def __init__(self, docs: dict[str, bytes]) -> None:
        self.docs, self.asked = docs, []

    async def __call__(self, url: str, headers: dict) -> bytes | None:
        self.asked.append(url)
        await asyncio.sleep(0)  # let concurrent checks meet on the same fetch
        return self.docs.get(url)


# ---- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("/dists/bookworm/InRelease", Place("release", "", "bookworm", "InRelease")),
    ("/dists/bookworm-updates/Release.gpg", Place("release", "", "bookworm-updates", "Release.gpg")),
    ("/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + H1,
     Place("by-hash", "", "bookworm", "main/binary-amd64/by-hash/SHA256/" + H1)),
    ("/dists/bookworm/main/binary-amd64/Packages.xz", Place("index", "", "bookworm", "main/binary-amd64/Packages.xz")),
    ("/dists/bookworm/main/binary-amd64/Release", Place("index", "", "bookworm", "main/binary-amd64/Release")),
    ("/pool/main/h/hello/hello_2.10-3_amd64.deb", Place("pool", "", rest="main/h/hello/hello_2.10-3_amd64.deb")),
    # A rule whose prefix is the host, not the archive root.
    ("/debian/dists/bookworm/InRelease", Place("release", "/debian", "bookworm", "InRelease")),
    ("/debian/pool/main/h/hello/x.deb", Place("pool", "/debian", rest="main/h/hello/x.deb")),
    ("/README", None),
    ("/dists/bookworm/", None),
    ("/pool/main/h/hello/", None),
    ("/ls-lR.gz", None),
])
def test_place_in_the_archive(path, expected):
    assert place(path) == expected


def test_release_files_come_from_the_origin_first_and_everything_else_is_checked():
    apt = registry()["apt"]
    assert apt.prefers_origin("/dists/bookworm/InRelease") and apt.prefers_origin("/dists/sid/Release")
    assert not apt.prefers_origin("/dists/bookworm/main/binary-amd64/Packages.xz")
    assert not apt.prefers_origin("/pool/main/h/hello/hello_2.10-3_amd64.deb")
    assert not apt.checks("/dists/bookworm/InRelease")  # apt checks its signature
    assert apt.checks("/dists/bookworm/main/binary-amd64/Packages.xz")
    assert apt.checks("/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + H1)
    assert apt.checks("/pool/main/h/hello/hello_2.10-3_amd64.deb")
    assert not apt.checks("/README")


@pytest.mark.parametrize("algo, name, value", [
    ("SHA256", "sha256", hashlib.sha256(b"x")),
    ("SHA512", "sha512", hashlib.sha512(b"x")),
    ("SHA1", "sha1", hashlib.sha1(b"x")),
    ("MD5Sum", "md5", hashlib.md5(b"x")),
])
def test_a_by_hash_path_names_its_digest(algo, name, value):
    path = f"main/binary-amd64/by-hash/{algo}/{value.hexdigest().upper()}"
    assert by_hash_digest(path) == Digest(name, value.digest())


@pytest.mark.parametrize("path", [
    "main/binary-amd64/by-hash/SHA256/abcd",  # too short for SHA256
    f"main/binary-amd64/by-hash/SHA384/{hashlib.sha384(b'x').hexdigest()}",  # not an algorithm apt uses
    f"main/binary-amd64/by-hash/SHA256/{H1}/extra",
])
def test_a_by_hash_path_that_names_no_usable_digest(path):
    assert by_hash_digest(path) is None


@pytest.mark.parametrize("rest, kind", [
    (f"main/binary-amd64/by-hash/SHA256/{H1}", "packages"),
    (f"main/debian-installer/binary-arm64/by-hash/SHA256/{H1}", "packages"),
    (f"main/source/by-hash/SHA256/{H1}", "sources"),
    (f"main/i18n/by-hash/SHA256/{H1}", None),
    ("main/binary-amd64/Packages", "packages"),
    ("main/binary-amd64/Packages.xz", "packages"),
    ("main/source/Sources.gz", "sources"),
    ("main/i18n/Translation-en.bz2", None),
    ("main/binary-amd64/Packages.diff/Index", None),
    ("main/Contents-amd64.gz", None),
])
def test_which_indices_name_pool_files(rest, kind):
    assert index_kind(rest) == kind


def test_archive_root_is_canonical_and_unescaped():
    path = "/pool/main/g/gcc-12/libstdc%2b%2b6_12.2.0-14_amd64.deb"
    assert archive_root(ROOT + path + "?x=1", path, "") == ROOT
    assert archive_root("http://mirror.example/debian" + path, "/debian" + path, "/debian") == \
        "http://mirror.example/debian"
    assert archive_root("http://h.example/de%62ian" + path, path, "") == "http://h.example/debian"


# ---- Release files -----------------------------------------------------------------------


def clearsigned(text: str) -> str:
    escaped = "".join("- " + line if line.startswith("-") else line for line in text.splitlines(keepends=True))
    return ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + escaped +
            "-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQ SHA256:\n abcd\n-----END PGP SIGNATURE-----\n")


def test_the_signed_part_of_an_inrelease():
    text = "Origin: Debian\n-----dashes in the text\nSHA256:\n x\n"
    assert signed_text(clearsigned(text)) == text
    assert signed_text(text) == text


@pytest.mark.parametrize("document", [RELEASE, clearsigned(RELEASE)], ids=["Release", "InRelease"])
def test_release_hashes_come_from_the_sha256_section_only(document):
    assert release_hashes(document) == {
        "main/binary-amd64/Packages": (H1, 53092),
        "main/binary-amd64/Packages.xz": (H2, 1234),
        "main/i18n/Translation-en": (H3, 99),
    }


def test_release_hashes_skip_malformed_lines():
    assert release_hashes("SHA256:\n nothex 12 a\n " + H1 + " big b\n " + H1 + " 3\n") == {}


# ---- Packages and Sources ----------------------------------------------------------------


def test_package_digests_pair_each_filename_with_its_sha256():
    assert list(package_digests(PACKAGES.splitlines(keepends=True))) == [
        ("pool/main/h/hello/hello_2.10-3_amd64.deb", bytes.fromhex(H1)),
        ("pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", bytes.fromhex(H2)),
        ("pool/main/l/last/last_1~rc1_all.deb", bytes.fromhex(H3)),
    ]


def test_source_digests_name_every_file_of_a_source_package():
    sources = f"""\
Package: hello
Directory: pool/main/h/hello
Files:
 0123456789abcdef0123456789abcdef 1 hello_2.10-3.dsc
Checksums-Sha256:
 {H1} 1950 hello_2.10-3.dsc
 {H2} 725946 hello_2.10.orig.tar.gz
Priority: optional

Package: broken
Checksums-Sha256:
 {H3} 1 no-directory.dsc
""".encode()
    assert list(source_digests(sources.splitlines(keepends=True))) == [
        ("pool/main/h/hello/hello_2.10-3.dsc", bytes.fromhex(H1)),
        ("pool/main/h/hello/hello_2.10.orig.tar.gz", bytes.fromhex(H2)),
    ]


@pytest.mark.parametrize("compress", [lambda b: b, lambda b: gzip.compress(b, mtime=0), lzma.compress],
                         ids=["plain", "gz", "xz"])
def test_a_checked_packages_index_teaches_the_book_its_packages(compress):
    book = PackageBook()
    data = compress(PACKAGES)
    with body(data) as f:
        check = CheckedIndex(Digest("sha256", hashlib.sha256(data).digest()), "packages", ROOT, book)
        assert check.verify(f.fileno(), len(data))
    assert len(book) == 3
    assert book.get(f"{ROOT}/pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb") == bytes.fromhex(H2)
    assert book.get("http://archive.ubuntu.com/ubuntu/pool/main/h/hello/hello_2.10-3_amd64.deb") is None


def test_an_index_that_fails_its_check_teaches_nothing():
    book = PackageBook()
    with body(PACKAGES) as f:
        check = CheckedIndex(Digest("sha256", hashlib.sha256(b"other").digest()), "packages", ROOT, book)
        assert not check.verify(f.fileno(), len(PACKAGES))
    assert len(book) == 0


def test_an_unreadable_index_with_the_right_digest_still_passes():
    data = b"\xfd7zXZ\x00 but not really xz"
    book = PackageBook()
    with body(data) as f:
        assert CheckedIndex(Digest("sha256", hashlib.sha256(data).digest()), "packages", ROOT, book).verify(
            f.fileno(), len(data))
    assert len(book) == 0


def test_the_book_reads_by_offset_and_leaves_the_descriptors_position_alone():
    book = PackageBook()
    with body(PACKAGES) as f:
        f.seek(2)  # where the cache writer left it
        assert book.learn(ROOT, "packages", f.fileno(), len(PACKAGES)) == 3
        assert f.tell() == 2


def test_the_book_is_bounded_and_forgets_the_oldest_first():
    book = PackageBook(capacity=3)
    book.add(ROOT, [(f"pool/p{i}.deb", bytes([i]) * 32) for i in range(3)])
    book.add(ROOT, [("pool/p0.deb", b"\x00" * 32)])  # read again: the newest now
    book.add(ROOT, [("pool/p3.deb", b"\x03" * 32)])
    assert len(book) == 3
    assert book.get(f"{ROOT}/pool/p1.deb") is None
    assert [book.get(f"{ROOT}/pool/p{i}.deb") for i in (0, 2, 3)] == [b"\x00" * 32, b"\x02" * 32, b"\x03" * 32]


# ---- expectations ------------------------------------------------------------------------


def test_a_package_is_checked_against_the_digest_an_index_gave_it():
    apt = Apt()
    apt.packages.add(ROOT, [("pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", bytes.fromhex(H2))])
    origin = Origin({})
    path = "/pool/main/g/gcc-12/libstdc%2b%2b6_12.2.0-14_amd64.deb"  # as apt asks for it

    known = asyncio.run(apt.expect(path, ROOT + path, {}, origin))
    unknown = asyncio.run(apt.expect("/pool/main/h/hello/new.deb", ROOT + "/pool/main/h/hello/new.deb", {}, origin))

    assert known == Digest("sha256", bytes.fromhex(H2))
    assert unknown is None and origin.asked == []


def test_a_by_hash_file_is_checked_against_its_own_name():
    apt = Apt()
    path = f"/dists/bookworm/main/binary-amd64/by-hash/SHA256/{H1}"
    check = asyncio.run(apt.expect(path, ROOT + path, {}, Origin({})))
    assert isinstance(check, CheckedIndex)
    assert (check.digest, check.kind, check.root) == (Digest("sha256", bytes.fromhex(H1)), "packages", ROOT)


def test_index_files_are_checked_against_the_origins_release_fetched_once():
    apt = Apt()
    origin = Origin({f"{ROOT}/dists/bookworm/InRelease": clearsigned(RELEASE).encode()})
    paths = ["/dists/bookworm/main/binary-amd64/Packages", "/dists/bookworm/main/binary-amd64/Packages.xz",
             "/dists/bookworm/main/i18n/Translation-en", "/dists/bookworm/main/binary-arm64/Packages"]

    async def all_at_once():
        return await asyncio.gather(*(apt.expect(p, ROOT + p, {}, origin) for p in paths))

    checks = asyncio.run(all_at_once())

    assert [(c.digest.value.hex(), c.kind) if c else None for c in checks] == [
        (H1, "packages"), (H2, "packages"), (H3, None), None]  # not listed: nothing to check against
    assert origin.asked == [f"{ROOT}/dists/bookworm/InRelease"]


def test_without_an_inrelease_the_release_file_is_used():
    apt = Apt()
    origin = Origin({f"{ROOT}/dists/bookworm/Release": RELEASE.encode()})
    path = "/dists/bookworm/main/binary-amd64/Packages.xz"
    check = asyncio.run(apt.expect(path, ROOT + path, {}, origin))
    assert check.digest == Digest("sha256", bytes.fromhex(H2))
    assert origin.asked == [f"{ROOT}/dists/bookworm/InRelease", f"{ROOT}/dists/bookworm/Release"]


def test_without_any_release_an_index_goes_unchecked():
    apt = Apt()
    path = "/dists/bookworm/main/binary-amd64/Packages.xz"
    assert asyncio.run(apt.expect(path, ROOT + path, {}, Origin({}))) is None
    assert asyncio.run(apt.expect("/dists/bookworm/InRelease", ROOT + "/dists/bookworm/InRelease", {},
                                  Origin({}))) is None
