"""PyPI through the proxy with the real pip as the judge: mirror pages are rewritten to
origin file URLs, mirror files are checked against their BLAKE2b path, and pip succeeds
whatever the mirror does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT, closed_port
from tests.support.proxy import clean_env
from tests.support.pypi import Dist, html_page, json_page, wheel

pytestmark = pytest.mark.e2e

DEMO = wheel("demo-pkg", "1.0")


class PyPI:
    """An origin index (like pypi.org/simple), an origin file host (like
    files.pythonhosted.org) and a bandersnatch-style mirror with relative links."""

    def __init__(self, fake, dists: list[Dist] = (DEMO,)):
        self.index = fake("pypi.org", "127.0.0.2")
        self.files = fake("files.pythonhosted.org", "127.0.0.4")
        self.mirror = fake("mirror", "127.0.0.3")
        self.dists = list(dists)
        page = html_page("demo-pkg", self.dists, lambda d: f"{self.files.url}packages/{d.hash_path}")
        self.index.serve("/simple/demo-pkg/", page, headers={"Content-Type": "text/html"})
        for d in self.dists:
            self.files.serve(f"/packages/{d.hash_path}", d.data)
            self.mirror.serve(f"/pypi/web/packages/{d.hash_path}", d.data)
        self.mirror_page(html_page("demo-pkg", self.dists, lambda d: f"../../packages/{d.hash_path}"))

    def mirror_page(self, body: bytes, content_type: str = "text/html") -> None:
        self.mirror.serve("/pypi/web/simple/demo-pkg/", body, headers={"Content-Type": content_type})

    def rules(self, mirror_url: str | None = None) -> str:
        mirror = mirror_url or self.mirror.url
        return f"""\
version: 1
profiles: {{test: ""}}
default_profile: test
rules:
  - name: pypi-simple
    match: {self.index.url}simple/
    protocol: {{name: pypi-simple, files: {self.files.url}packages/}}
    mirrors:
      test: [{mirror}pypi/web/simple/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache: {{metadata: ["/**"], ttl: 10m, vary: [Accept]}}
  - name: pypi-files
    match: {self.files.url}packages/
    protocol: pypi-files
    mirrors:
      test: [{mirror}pypi/web/packages/]
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 5xx, 404]
    cache: {{artifacts: ["/**"]}}
"""


def pip_install(p, pki, tmp_path, *packages: str) -> dict:
    """The real pip, with no configuration of its own but what we pass."""
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    report = tmp_path / "report.json"
    env = {**clean_env(), "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--target", str(tmp_path / "t"),
         "--report", str(report), "--index-url", pypi_index_url(p), "--proxy", p.url, "--cert", str(bundle),
         *packages], capture_output=True, text=True, env=env, timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-3000:]
    return json.loads(report.read_text())


def pypi_index_url(p) -> str:
    return p.index_url  # set by each test: the origin index


def installed_from(report: dict) -> list[str]:
    return [item["download_info"]["url"] for item in report["install"]]


def test_pip_installs_from_the_mirror_and_records_origin_urls(fake, proxy, pki, tmp_path):
    pypi = PyPI(fake)
    p = proxy(pypi.rules())
    p.index_url = pypi.index.url + "simple/"

    report = pip_install(p, pki, tmp_path, "demo-pkg==1.0")

    assert installed_from(report) == [f"{pypi.files.url}packages/{DEMO.hash_path}"]
    assert (tmp_path / "t" / "demo_pkg" / "__init__.py").read_text() == 'VERSION = "1.0"\n'
    assert pypi.mirror.count(f"/pypi/web/packages/{DEMO.hash_path}") == 1
    assert pypi.index.count() + pypi.files.count() == 0  # the origins were never asked


def test_pip_succeeds_when_the_mirror_serves_corrupted_bytes(fake, proxy, pki, tmp_path, client):
    pypi = PyPI(fake)
    corrupted = bytes(b ^ 0xFF for b in DEMO.data)  # the right length, the wrong bytes
    pypi.mirror.serve(f"/pypi/web/packages/{DEMO.hash_path}", corrupted)
    p = proxy(pypi.rules())
    p.index_url = pypi.index.url + "simple/"

    report = pip_install(p, pki, tmp_path, "demo-pkg==1.0")

    assert installed_from(report) == [f"{pypi.files.url}packages/{DEMO.hash_path}"]
    assert pypi.files.count(f"/packages/{DEMO.hash_path}") == 1  # the origin served it
    # What the cache holds now is the good file, and the mirror's bytes were never kept.
    r = client(p).get(f"{pypi.files.url}packages/{DEMO.hash_path}")
    assert r.content == DEMO.data and header(r)["cache"] == "HIT"
    assert "integrity" in p.text()


def test_pip_succeeds_with_the_mirror_down(fake, proxy, pki, tmp_path):
    pypi = PyPI(fake)
    p = proxy(pypi.rules(f"https://127.0.0.3:{closed_port('127.0.0.3')}/"))
    p.index_url = pypi.index.url + "simple/"

    report = pip_install(p, pki, tmp_path, "demo-pkg==1.0")

    assert installed_from(report) == [f"{pypi.files.url}packages/{DEMO.hash_path}"]
    assert pypi.index.count() == 1 and pypi.files.count() == 1


def test_pip_finds_a_project_the_mirror_has_not_synced(fake, proxy, pki, tmp_path):
    pypi = PyPI(fake)
    fresh = wheel("fresh-pkg", "0.1")
    pypi.index.serve("/simple/fresh-pkg/", html_page("fresh-pkg", [fresh],
                                                     lambda d: f"{pypi.files.url}packages/{d.hash_path}"),
                     headers={"Content-Type": "text/html"})
    pypi.files.serve(f"/packages/{fresh.hash_path}", fresh.data)
    p = proxy(pypi.rules())  # the mirror 404s both the page and the file
    p.index_url = pypi.index.url + "simple/"

    report = pip_install(p, pki, tmp_path, "fresh-pkg==0.1")

    assert installed_from(report) == [f"{pypi.files.url}packages/{fresh.hash_path}"]
    assert pypi.mirror.count("/pypi/web/simple/fresh-pkg/") == 1  # asked, lagging, passed over
    assert pypi.index.count("/simple/fresh-pkg/") == 1 and pypi.files.count() == 1


def test_pep691_json_pages_are_rewritten_too(fake, proxy, client):
    pypi = PyPI(fake)
    pypi.mirror_page(json_page("demo-pkg", [DEMO], lambda d: f"../../packages/{d.hash_path}"),
                     "application/vnd.pypi.simple.v1+json")
    p = proxy(pypi.rules())

    r = client(p).get(pypi.index.url + "simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})

    doc = r.json()
    assert doc["files"][0]["url"] == f"{pypi.files.url}packages/{DEMO.hash_path}"
    assert doc["files"][0]["hashes"] == {"sha256": DEMO.sha256}
    assert r.headers["etag"].startswith('"mg-') and int(r.headers["content-length"]) == len(r.content)
    assert header(r)["upstream"] == f"mirror:{pypi.mirror.url}pypi/web/simple/"


def uv_lock(p, pki, tmp_path, index_url: str) -> str:
    """The real uv, with no configuration of its own; returns uv.lock."""
    from uv import find_uv_bin

    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\ndependencies = ["demo-pkg==1.0"]\n')
    bundle = p.trust_bundle(pki.ca, tmp_path / "cas.pem")
    env = {**clean_env(), "HOME": str(tmp_path), "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
           "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never",
           "HTTPS_PROXY": p.url, "SSL_CERT_FILE": str(bundle)}
    out = subprocess.run([find_uv_bin(), "lock", "--default-index", index_url], cwd=project, capture_output=True, text=True, env=env,
                         timeout=WAIT * 4)
    assert out.returncode == 0, out.stdout + out.stderr + "\n--- proxy ---\n" + p.text()[-3000:]
    return (project / "uv.lock").read_text()


def test_uv_lock_records_origin_urls(fake, proxy, pki, tmp_path):
    pypi = PyPI(fake)
    p = proxy(pypi.rules())

    lock = uv_lock(p, pki, tmp_path, pypi.index.url + "simple/")

    assert f'url = "{pypi.files.url}packages/{DEMO.hash_path}"' in lock
    assert pypi.mirror.url not in lock and "127.0.0.3" not in lock
    assert pypi.mirror.count("/pypi/web/simple/demo-pkg/") == 1 and pypi.index.count() == 0
