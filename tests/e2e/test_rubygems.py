"""RubyGems through the proxy with the real Bundler as the judge: the compact index and
the .gem files come from the mirror, each .gem is checked against its `/info` checksum
at the origin, Gemfile.lock names the origin, and a Bundler that already holds index
files (and so asks for appends by range) never gets bytes that do not fit its copy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT, closed_port
from tests.support.pki import loopback_hostname
from tests.support.proxy import clean_env
from tests.support.rubygems import CompactIndex, Gem, build_gem, publish

# Ruby's proxy lookup passes over neither localhost nor this name; the name is in the
# fakes' certificate.
HOST = loopback_hostname() or ("localhost", "127.0.0.1")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not (shutil.which("bundle") and shutil.which("gem")),
                                                  reason="Ruby's bundle and gem are not on PATH")]
GEMFILE = 'source "{source}"\n\ngem "mg-app"\n'


@dataclass(frozen=True)
class Gems:
    base: Gem  # mg-base 1.0.0
    app: Gem  # mg-app 1.0.0, depends on mg-base >= 1.0
    newer: Gem  # mg-base 1.1.0, published later


@pytest.fixture(scope="session")
def gems(tmp_path_factory) -> Gems:
    d = tmp_path_factory.mktemp("gems")
    return Gems(build_gem(d, "mg-base", "1.0.0"), build_gem(d, "mg-app", "1.0.0", (("mg-base", ">= 1.0"),)),
                build_gem(d, "mg-base", "1.1.0"))


class RubyGemsOrg:
    """A fake rubygems.org and a mirror of it under /rubygems/ (as USTC lays it out). The
    mirror wrote its own /versions when it first synced, so its bytes differ from the
    origin's (another created_at), as two snapshots do."""

    def __init__(self, fake, gems: list[Gem], mirror_gems: list[Gem] | None = None) -> None:
        self.origin = fake("rubygems.org", HOST[1], name_in_url=HOST[0])
        self.mirror = fake("mirror", HOST[1], name_in_url=HOST[0])
        self.origin_index = CompactIndex.of("2026-01-01T00:00:00Z", gems)
        self.mirror_index = CompactIndex.of("2026-01-01T00:07:30Z", gems if mirror_gems is None else mirror_gems)
        publish(self.origin, "", self.origin_index, gems)
        publish(self.mirror, "/rubygems", self.mirror_index, gems if mirror_gems is None else mirror_gems)

    @property
    def source(self) -> str:
        return self.origin.url

    def release(self, gem: Gem) -> None:
        """A new version reaches the origin and, in its next sync, the mirror."""
        for fake, prefix, index in ((self.origin, "", self.origin_index),
                                    (self.mirror, "/rubygems", self.mirror_index)):
            index.add(gem)
            publish(fake, prefix, index, [gem])

    def rules(self, mirror_url: str | None = None) -> str:
        m = mirror_url or self.mirror.url
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: rubygems
    match: {self.origin.url}
    protocol: rubygems          # .gem checked against /info at the origin (the default index)
    mirrors:
      test: [{m}rubygems/]
    origin_only: [/api/v1/gems, /api/v1/api_key]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache:
      metadata: [/versions, /names, "/info/*"]
      artifacts: ["/gems/*.gem"]
      ttl: 5m
"""


@dataclass
class Bundler:
    """One user's Bundler: a home (with its compact index copies), an app, an install path."""

    root: Path

    @property
    def app(self) -> Path:
        return self.root / "app"

    def run(self, p, pki, gemfile: str, *args: str) -> str:
        self.app.mkdir(parents=True, exist_ok=True)
        (self.app / "Gemfile").write_text(gemfile)
        ca = p.trust_bundle(pki.ca, self.root / "cas.pem")
        home = self.root / "home"
        env = {**clean_env(), "HOME": str(home), "GEM_HOME": str(home / "gems"), "GEM_PATH": str(home / "gems"),
               "BUNDLE_USER_HOME": str(home / ".bundle"), "BUNDLE_APP_CONFIG": str(self.app / ".bundle"),
               "BUNDLE_GEMFILE": str(self.app / "Gemfile"), "BUNDLE_PATH": str(self.root / "installed"),
               "BUNDLE_RETRY": "0", "BUNDLE_SILENCE_ROOT_WARNING": "true", "BUNDLE_JOBS": "1",
               # Bundler's own connection reads HTTP_PROXY even for https; RubyGems' (the
               # .gem downloads) reads HTTPS_PROXY.
               "HTTPS_PROXY": p.url, "HTTP_PROXY": p.url, "SSL_CERT_FILE": str(ca)}
        out = subprocess.run(["bundle", *args, "--verbose"], cwd=self.app, env=env, capture_output=True, text=True,
                             timeout=WAIT * 6)
        log = out.stdout + out.stderr
        assert out.returncode == 0, log + "\n--- proxy ---\n" + p.text()[-4000:]
        assert "does not match" not in log, log
        return log

    @property
    def lock(self) -> str:
        return (self.app / "Gemfile.lock").read_text()

    def index_copy(self, name: str) -> bytes:
        """Bundler's own copy of a compact index file ("versions", "info/mg-base")."""
        found = list((self.root / "home" / ".bundle" / "cache" / "compact_index").glob(f"*/{name}"))
        assert len(found) == 1, found
        return found[0].read_bytes()

    def installed(self, gem: Gem) -> bool:
        return any(self.root.glob(f"installed/ruby/*/gems/{gem.name}-{gem.version}/lib"))


def fetched(log: str, url: str) -> list[str]:
    """The status lines Bundler logged (--verbose) for `url`, in order."""
    return re.findall(rf"^HTTP (\d+ [^\n]*?) {re.escape(url)}$", log, re.MULTILINE)


def access(p, url: str) -> list[dict]:
    records = [json.loads(line[line.index("{"):]) for line in p.output if '"duration_ms"' in line]
    return [r for r in records if r["url"] == url]


def check_lock(lock: str, source: str, *gems: Gem) -> None:
    assert f"GEM\n  remote: {source}\n  specs:\n" in lock
    for g in gems:
        assert f"\n    {g.name} ({g.version})\n" in lock


def test_bundle_installs_from_the_mirror(fake, proxy, pki, tmp_path, client, gems):
    reg = RubyGemsOrg(fake, [gems.base, gems.app])
    p = proxy(reg.rules())
    user = Bundler(tmp_path / "user")

    user.run(p, pki, GEMFILE.format(source=reg.source), "install")

    check_lock(user.lock, reg.source, gems.app, gems.base)
    assert user.installed(gems.app) and user.installed(gems.base)
    # The index and both gems came from the mirror; the origin was asked only for the
    # /info files that the .gem checks read.
    for path in ("/versions", "/info/mg-app", "/info/mg-base", gems.app.path, gems.base.path):
        assert reg.mirror.count("/rubygems" + path) == 1, path
    assert sorted(h.path for h in reg.origin.hits) == ["/info/mg-app", "/info/mg-base"]
    assert user.index_copy("versions") == reg.mirror_index.versions
    c = client(p)
    for g in (gems.app, gems.base):
        r = c.get(reg.source + g.path.lstrip("/"))
        assert r.content == g.data and header(r)["cache"] == "HIT"


def test_bundle_succeeds_with_the_mirror_down(fake, proxy, pki, tmp_path, gems):
    reg = RubyGemsOrg(fake, [gems.base, gems.app])
    p = proxy(reg.rules(f"https://{HOST[0]}:{closed_port(HOST[1])}/"))
    user = Bundler(tmp_path / "user")

    user.run(p, pki, GEMFILE.format(source=reg.source), "install")

    check_lock(user.lock, reg.source, gems.app, gems.base)
    assert user.installed(gems.app) and user.installed(gems.base)
    assert reg.origin.count("/versions") == 1
    assert reg.origin.count(gems.app.path) == reg.origin.count(gems.base.path) == 1
    assert user.index_copy("versions") == reg.origin_index.versions


def test_bundle_succeeds_when_the_mirror_serves_a_corrupted_gem(fake, proxy, pki, tmp_path, client, gems):
    reg = RubyGemsOrg(fake, [gems.base, gems.app])
    reg.mirror.serve("/rubygems" + gems.base.path, bytes(b ^ 0x5A for b in gems.base.data))
    p = proxy(reg.rules())
    user = Bundler(tmp_path / "user")

    user.run(p, pki, GEMFILE.format(source=reg.source), "install")

    check_lock(user.lock, reg.source, gems.app, gems.base)
    assert user.installed(gems.base)
    assert reg.origin.count(gems.base.path) == 1  # the good bytes
    assert reg.origin.count(gems.app.path) == 0 and reg.mirror.count("/rubygems" + gems.app.path) == 1
    assert "integrity" in p.text()
    r = client(p).get(reg.source + gems.base.path.lstrip("/"))
    assert r.content == gems.base.data and header(r)["cache"] == "HIT"
    assert reg.origin.count(gems.base.path) == 1


def test_bundler_appending_to_its_copy_gets_whole_files_from_one_source(fake, proxy, pki, tmp_path, gems):
    reg = RubyGemsOrg(fake, [gems.base, gems.app])
    user = Bundler(tmp_path / "user")
    # First run with the mirror down: Bundler's index copies are the origin's bytes.
    first = proxy(reg.rules(f"https://{HOST[0]}:{closed_port(HOST[1])}/"))
    user.run(first, pki, GEMFILE.format(source=reg.source), "install")
    assert user.index_copy("versions") == reg.origin_index.versions
    first.stop()
    # Both grow; the mirror's file is its own snapshot, so the origin's bytes past the
    # client's copy would not fit it, nor the mirror's the origin's.
    reg.release(gems.newer)
    mirror_seen = len(reg.mirror.hits)
    p = proxy(reg.rules())

    log = user.run(p, pki, GEMFILE.format(source=reg.source) + 'gem "mg-base", ">= 1.1"\n', "install")

    check_lock(user.lock, reg.source, gems.app, gems.newer)
    assert user.installed(gems.newer)
    # Bundler held copies, so it asked for appends (updater.rb); it got one whole file,
    # first time, with no retry after a checksum mismatch.
    assert fetched(log, reg.source + "versions") == ["200 OK"]
    assert fetched(log, reg.source + "info/mg-base") == ["200 OK"]
    assert [r["status"] for r in access(p, reg.source + "versions")] == [200]
    compact = [h for h in reg.mirror.hits[mirror_seen:] if not h.path.startswith("/rubygems/gems/")]
    assert sorted(h.path for h in compact) == ["/rubygems/info/mg-base", "/rubygems/versions"]
    assert not any("Range" in h.headers for h in compact)
    assert reg.origin.count("/versions") == 1  # the first run's only
    # The copies are now the mirror's files, byte for byte.
    assert user.index_copy("versions") == reg.mirror_index.versions
    assert user.index_copy("info/mg-base") == reg.mirror_index.info["mg-base"]

    # Nothing changed since: the proxy's entries match Bundler's copies, so 304s.
    log = user.run(p, pki, GEMFILE.format(source=reg.source) + 'gem "mg-base", ">= 1.1"\n', "lock", "--update")
    assert fetched(log, reg.source + "versions") == ["304 Not Modified"]
    assert [r["cache"] for r in access(p, reg.source + "versions")][-1] == "HIT"
    assert reg.mirror.count("/rubygems/versions") == 1  # the earlier fill's only
    assert user.index_copy("versions") == reg.mirror_index.versions


def test_a_stale_mirror_index_replaces_the_copy_instead_of_splicing_into_it(fake, proxy, pki, tmp_path, gems):
    # The mirror has not synced mg-base 1.1.0 yet: its /versions is shorter than the copy
    # Bundler got from the origin, and its /info/mg-base too.
    reg = RubyGemsOrg(fake, [gems.base, gems.app, gems.newer], mirror_gems=[gems.base, gems.app])
    user = Bundler(tmp_path / "user")
    gemfile = GEMFILE.format(source=reg.source) + 'gem "mg-base", "1.0.0"\n'
    first = proxy(reg.rules(f"https://{HOST[0]}:{closed_port(HOST[1])}/"))
    user.run(first, pki, gemfile, "install")
    assert user.index_copy("versions") == reg.origin_index.versions
    first.stop()
    p = proxy(reg.rules())
    # A newcomer fills the proxy's entries first, gzip-coded: Net::HTTP asks for gzip
    # unless a request carries a Range, and then decodes only what it asked for.
    Bundler(tmp_path / "newcomer").run(p, pki, gemfile, "lock")
    assert [r["status"] for r in access(p, reg.source + "versions")] == [200]

    log = user.run(p, pki, gemfile, "lock", "--update")

    check_lock(user.lock, reg.source, gems.app, gems.base)
    assert fetched(log, reg.source + "versions") == ["200 OK"]
    assert not any("Range" in h.headers for h in reg.mirror.hits)
    assert user.index_copy("versions") == reg.mirror_index.versions
    assert user.index_copy("info/mg-base") == reg.mirror_index.info["mg-base"]
