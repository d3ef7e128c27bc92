"""A small Debian archive for fake origins and mirrors: real .deb files built with
dpkg-deb, Packages indices with their by-hash copies, and a Release file clearsigned
with a throwaway gpg key; and an apt-get that runs in a throwaway root through the proxy.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import lzma
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.fakes import WAIT
from tests.support.proxy import clean_env

CODENAME = "mg"
ARCH = "amd64"


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    arch: str
    data: bytes

    @property
    def filename(self) -> str:
        """Below the archive root, as Debian's pool lays packages out."""
        return f"pool/main/{self.name[0]}/{self.name}/{self.name}_{self.version}_{self.arch}.deb"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def stanza(self) -> str:
        return (f"Package: {self.name}\nVersion: {self.version}\nArchitecture: {self.arch}\n"
                f"Maintainer: Mirrorgate Tests <tests@example.invalid>\nInstalled-Size: 1\n"
                f"Filename: {self.filename}\nSize: {len(self.data)}\n"
                f"MD5sum: {hashlib.md5(self.data).hexdigest()}\nSHA256: {self.sha256}\n"
                f"Description: {self.name}, a package for Mirrorgate's tests\n")


def build_deb(workdir: Path, name: str, version: str, arch: str) -> Deb:
    root = workdir / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: Mirrorgate Tests <tests@example.invalid>\nDescription: {name} for Mirrorgate's tests\n")
    doc = root / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True)
    (doc / "README").write_text(f"{name} {version}\n")
    out = workdir / f"{name}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
                   check=True, capture_output=True, timeout=WAIT * 2)
    return Deb(name, version, arch, out.read_bytes())


class ArchiveKey:
    """A throwaway signing key in a gpg home of its own, standing in for the archive's."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--passphrase", "", "--quick-generate-key", "Mirrorgate Test Archive <archive@example.invalid>",
                  "ed25519", "sign", "never")
        self.keyring = home / "archive-keyring.gpg"  # what apt's signed-by names
        self.keyring.write_bytes(self._gpg("--export"))

    def _gpg(self, *args: str, data: bytes | None = None) -> bytes:
        out = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--quiet",
                              "--pinentry-mode", "loopback", *args],
                             input=data, capture_output=True, timeout=WAIT * 2, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"gpg {' '.join(args)} failed: {out.stderr.decode(errors='replace')}")
        return out.stdout

    def clearsign(self, text: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA512", "--clearsign", data=text)

    def detach_sign(self, text: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA512", "--armor", "--detach-sign", data=text)

    def close(self) -> None:
        # The agent gpg started for this home, and only it.
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=WAIT, check=False)


@dataclass(frozen=True)
class Suite:
    """Every file of one snapshot of an archive with one suite, by path below the root."""

    files: dict[str, bytes]
    debs: tuple[Deb, ...]

    def dists(self, name: str) -> str:
        return f"dists/{CODENAME}/{name}"

    def index(self, name: str) -> str:
        return self.dists(f"main/binary-{ARCH}/{name}")

    def by_hash(self, name: str) -> str:
        """The by-hash path of an index file (e.g. "Packages.xz")."""
        return self.index(f"by-hash/SHA256/{hashlib.sha256(self.files[self.index(name)]).hexdigest()}")


def suite(debs: list[Deb], key: ArchiveKey, by_hash: bool = True) -> Suite:
    packages = "\n".join(d.stanza for d in debs).encode()
    indices = {
        "Packages": packages,
        "Packages.gz": gzip.compress(packages, mtime=0),
        "Packages.xz": lzma.compress(packages),
    }
    date = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    release = (f"Origin: Mirrorgate\nLabel: Mirrorgate\nSuite: {CODENAME}\nCodename: {CODENAME}\n"
               f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S UTC')}\nArchitectures: {ARCH}\nComponents: main\n"
               f"Description: Mirrorgate test archive\n" + ("Acquire-By-Hash: yes\n" if by_hash else "") +
               "SHA256:\n" + "".join(f" {hashlib.sha256(body).hexdigest()} {len(body):16d} main/binary-{ARCH}/{name}\n"
                                     for name, body in indices.items())).encode()
    files = {f"dists/{CODENAME}/Release": release,
             f"dists/{CODENAME}/InRelease": key.clearsign(release),
             f"dists/{CODENAME}/Release.gpg": key.detach_sign(release)}
    for name, body in indices.items():
        files[f"dists/{CODENAME}/main/binary-{ARCH}/{name}"] = body
        if by_hash:
            files[f"dists/{CODENAME}/main/binary-{ARCH}/by-hash/SHA256/{hashlib.sha256(body).hexdigest()}"] = body
    for d in debs:
        files[d.filename] = d.data
    return Suite(files, tuple(debs))


def serve(fake, prefix: str, archive: Suite) -> None:
    """Put an archive on a fake below `prefix` ("/debian/")."""
    for path, body in archive.files.items():
        fake.serve(prefix + path, body)


class AptRoot:
    """apt-get with a root of its own: its own configuration, lists, caches and an empty
    dpkg status; nothing of the machine's /etc/apt or /var/lib/apt is read or written."""

    def __init__(self, root: Path, proxy_url: str, archive_url: str, keyring: Path, *options: str) -> None:
        self.root = root
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d", "etc/apt/trusted.gpg.d",
                  "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg", "var/log/apt",
                  "download"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").write_text("")
        (root / "etc/apt/sources.list").write_text(f"deb [signed-by={keyring}] {archive_url} {CODENAME} main\n")
        settings = {
            "Dir": f"{root}/",
            "Dir::State": f"{root}/var/lib/apt/",
            "Dir::State::status": f"{root}/var/lib/dpkg/status",
            "Dir::Cache": f"{root}/var/cache/apt/",
            "Dir::Log": f"{root}/var/log/apt/",
            "Dir::Etc": f"{root}/etc/apt/",
            "Dir::Etc::Parts": f"{root}/etc/apt/apt.conf.d/",
            "Dir::Etc::TrustedParts": f"{root}/etc/apt/trusted.gpg.d/",
            "Debug::NoLocking": "1",
            "APT::Architecture": ARCH,
            "APT::Sandbox::User": "root",  # the _apt user cannot enter a root-only tmp dir
            "Acquire::http::Proxy": proxy_url,
            "Acquire::Languages": "none",
            "Acquire::Retries": "0",
        }
        for option in options:
            name, _, value = option.partition("=")
            settings[name] = value
        # APT_CONFIG is read before anything else, so the machine's apt.conf.d is never read.
        self.config = root / "apt.conf"
        self.config.write_text("".join(f'{k} "{v}";\n' for k, v in settings.items()))
        self.downloads = root / "download"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {**clean_env(), "APT_CONFIG": str(self.config), "LC_ALL": "C.UTF-8"}
        return subprocess.run(["apt-get", *args], cwd=self.downloads, env=env, capture_output=True, text=True,
                              timeout=WAIT * 4, check=False)

    def lists(self) -> list[str]:
        return sorted(p.name for p in (self.root / "var/lib/apt/lists").iterdir() if p.is_file())


def have_apt() -> bool:
    return all(shutil.which(tool) for tool in ("apt-get", "dpkg-deb", "gpg", "gpgconf"))
