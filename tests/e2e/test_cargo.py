"""crates.io through the proxy with the real cargo as the judge: the sparse index and
the downloads come from the mirror, config.json from the origin, and every .crate is
checked against its index cksum before cargo sees it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.e2e.test_fallback import header
from tests.support.crates import crate
from tests.support.fakes import WAIT, closed_port
from tests.support.pki import loopback_hostname
from tests.support.proxy import clean_env

HOST = loopback_hostname() or ("localhost", "127.0.0.1")
# Not installed by .ci/run: Debian's cargo predates the sparse index protocol; the machine
# image ships a current one through rustup.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("cargo") is None,
                                                  reason="cargo (1.68 or newer, for sparse indexes) is not on PATH")]

CRATES = [crate(n, "1.0.0") for n in ("ab", "xyz", "alpha-util", "beta")]


class CratesIo:
    def __init__(self, fake):
        self.index = fake("index.crates.io", HOST[1], name_in_url=HOST[0])
        self.files = fake("static.crates.io", HOST[1], name_in_url=HOST[0])
        self.mirror = fake("mirror", HOST[1], name_in_url=HOST[0])
        self.index.serve("/index/config.json", f'{{"dl": "{self.files.url}crates", "api": "{self.files.url}"}}'
                         .encode(), headers={"Content-Type": "application/json"})
        # A mirror's own config.json would send cargo to the mirror's download host.
        self.mirror.serve("/crates.io-index/config.json", f'{{"dl": "{self.mirror.url}dl"}}'.encode())
        for c in CRATES:
            for f, prefix in ((self.index, "/index"), (self.mirror, "/crates.io-index")):
                f.serve(prefix + c.index_path, c.index_line, headers={"ETag": f'"{c.cksum[:8]}"'})
            # cargo asks for <dl>/<name>/<version>/download; mirrors keep <name>-<version>.crate.
            self.files.serve(f"/crates/{c.name}/{c.version}/download", c.data)
            self.mirror.serve(f"/crates.io/crates{c.file_path}", c.data)

    def rules(self, mirror_url: str | None = None) -> str:
        m = mirror_url or self.mirror.url
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: crates-index
    match: {self.index.url}index/
    mirrors:
      test: [{m}crates.io-index/]
    origin_only: [/config.json]   # a mirror's names its own download host
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache: {{metadata: ["/**"], ttl: 5m}}
  - name: crates-files
    match: {self.files.url}crates/
    protocol: {{name: crates-files, index: {self.index.url}index/}}
    mirrors:
      test: [{m}crates.io/crates/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache: {{artifacts: ["/**"]}}
"""


def cargo_fetch(p, pki, tmp_path, index_url: str) -> str:
    home = tmp_path / "cargo-home"
    home.mkdir()
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    (home / "config.toml").write_text(
        f'[registries.fake]\nindex = "sparse+{index_url}"\n\n'
        f'[http]\nproxy = "{p.url}"\ncainfo = "{bundle}"\n\n[net]\nretry = 0\n')
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "lib.rs").write_text("")
    (app / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
        + "".join(f'{c.name} = {{ version = "1.0.0", registry = "fake" }}\n' for c in CRATES))
    # A cargo home of its own (config, registry cache); rustup's toolchains stay where they are.
    env = {**clean_env(), "CARGO_HOME": str(home),
           "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))}
    out = subprocess.run(["cargo", "fetch"], cwd=app, capture_output=True, text=True, env=env, timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-3000:]
    return (app / "Cargo.lock").read_text()


def check_lock(lock: str, index_url: str) -> None:
    for c in CRATES:
        entry = f'name = "{c.name}"\nversion = "{c.version}"\nsource = "sparse+{index_url}"\nchecksum = "{c.cksum}"'
        assert entry in lock


def test_cargo_fetches_from_the_mirror(fake, proxy, pki, tmp_path):
    io = CratesIo(fake)
    p = proxy(io.rules())

    check_lock(cargo_fetch(p, pki, tmp_path, io.index.url + "index/"), io.index.url + "index/")

    # From the origin index: config.json, and each crate's index file for its cksum.
    assert io.index.count("/index/config.json") == 1
    assert sorted(h.path for h in io.index.hits if h.path != "/index/config.json") == \
        sorted("/index" + c.index_path for c in CRATES)
    assert io.files.count() == 0
    assert all(io.mirror.count(f"/crates.io/crates{c.file_path}") == 1 for c in CRATES)
    assert io.mirror.count("/crates.io-index/config.json") == 0


def test_cargo_succeeds_when_the_mirror_serves_a_corrupted_crate(fake, proxy, pki, tmp_path, client):
    io = CratesIo(fake)
    bad = CRATES[2]
    io.mirror.serve(f"/crates.io/crates{bad.file_path}", bytes(b ^ 0x33 for b in bad.data))
    p = proxy(io.rules())

    check_lock(cargo_fetch(p, pki, tmp_path, io.index.url + "index/"), io.index.url + "index/")

    assert io.files.count(f"/crates/{bad.name}/{bad.version}/download") == 1
    r = client(p).get(f"{io.files.url}crates/{bad.name}/{bad.version}/download")
    assert r.content == bad.data and header(r)["cache"] == "HIT"
    assert "integrity" in p.text()


def test_cargo_succeeds_with_the_mirror_down(fake, proxy, pki, tmp_path):
    io = CratesIo(fake)
    p = proxy(io.rules(f"https://{HOST[0]}:{closed_port(HOST[1])}/"))

    check_lock(cargo_fetch(p, pki, tmp_path, io.index.url + "index/"), io.index.url + "index/")

    assert io.files.count() == len(CRATES)
