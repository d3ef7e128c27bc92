"""Small real Maven artifacts (jars and poms, with their checksum files), repository
layouts for fake origins and mirrors, and a Maven run of its own: settings.xml, a
truststore and a local repository in the test's directory."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.fakes import WAIT
from tests.support.proxy import clean_env

STOREPASS = "mirrorgate"
ALGORITHMS = {".sha1": "sha1", ".sha256": "sha256", ".md5": "md5", ".sha512": "sha512"}


def checksum(data: bytes, suffix: str) -> bytes:
    """A checksum file's body as Central writes it: the bare hex digest."""
    return hashlib.new(ALGORITHMS[suffix], data).hexdigest().encode()


@dataclass(frozen=True)
class Release:
    """One version of one artifact: its pom and its jar."""

    group: str
    artifact_id: str
    version: str
    pom: bytes
    jar: bytes

    @property
    def folder(self) -> str:
        return f"/{self.group.replace('.', '/')}/{self.artifact_id}/{self.version}"

    def path(self, ext: str) -> str:
        """Below the repository's root, e.g. /com/example/lib/1.0/lib-1.0.jar."""
        return f"{self.folder}/{self.artifact_id}-{self.version}.{ext}"

    @property
    def files(self) -> dict[str, bytes]:
        return {self.path("pom"): self.pom, self.path("jar"): self.jar}

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact_id}:{self.version}"


def jar(entries: dict[str, bytes]) -> bytes:
    """A real jar: a zip with a manifest, fixed timestamps so the bytes are stable."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\nCreated-By: mirrorgate tests\r\n\r\n",
                           **entries}.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def pom(group: str, artifact_id: str, version: str, dependencies: tuple[tuple[str, str, str], ...] = ()) -> bytes:
    deps = "".join(f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
                   f"<version>{v}</version></dependency>\n" for g, a, v in dependencies)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
            f'  <modelVersion>4.0.0</modelVersion>\n'
            f'  <groupId>{group}</groupId>\n  <artifactId>{artifact_id}</artifactId>\n'
            f'  <version>{version}</version>\n  <packaging>jar</packaging>\n'
            + (f"  <dependencies>\n{deps}  </dependencies>\n" if deps else "")
            + "</project>\n").encode()


def release(group: str, artifact_id: str, version: str,
            dependencies: tuple[tuple[str, str, str], ...] = ()) -> Release:
    cls = f"{group.replace('.', '/')}/{artifact_id.replace('-', '_')}/Version.class"
    # Not a compiled class: nothing loads it; the jar must only be a real, distinct zip.
    body = jar({cls: f"{artifact_id} {version}\n".encode(),
                f"META-INF/maven/{group}/{artifact_id}/pom.properties":
                    f"groupId={group}\nartifactId={artifact_id}\nversion={version}\n".encode()})
    return Release(group, artifact_id, version, pom(group, artifact_id, version, dependencies), body)


def metadata(group: str, artifact_id: str, versions: list[str]) -> bytes:
    listed = "".join(f"      <version>{v}</version>\n" for v in versions)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<metadata>\n  <groupId>{group}</groupId>\n'
            f'  <artifactId>{artifact_id}</artifactId>\n  <versioning>\n'
            f'    <latest>{versions[-1]}</latest>\n    <release>{versions[-1]}</release>\n'
            f'    <versions>\n{listed}    </versions>\n    <lastUpdated>20260101000000</lastUpdated>\n'
            f'  </versioning>\n</metadata>\n').encode()


def metadata_path(group: str, artifact_id: str) -> str:
    return f"/{group.replace('.', '/')}/{artifact_id}/maven-metadata.xml"


def serve(fake, root: str, files: dict[str, bytes], sidecars: tuple[str, ...] = (".sha1", ".sha256")) -> None:
    """Lay files out under `root` (e.g. "/maven2") on a fake, each with its checksum files."""
    for path, data in files.items():
        fake.serve(root + path, data)
        for suffix in sidecars:
            fake.serve(root + path + suffix, checksum(data, suffix))


# ---- a Maven run of its own ---------------------------------------------------------------

def settings_xml(repository_url: str, proxy_port: int) -> str:
    """Every repository (Central included) through one <mirror> at `repository_url`, and
    the proxy for http and https alike, as README.md tells users: Maven ignores
    HTTPS_PROXY and reads <proxies> only. An entry's <protocol> is the scheme of the
    repositories it serves (Mirrorgate's port is plain HTTP for both); Maven 3.8 also
    takes an `http` entry for https repositories when there is no `https` one."""
    proxies = "".join(f"""
    <proxy>
      <id>mirrorgate-{scheme}</id>
      <active>true</active>
      <protocol>{scheme}</protocol>
      <host>127.0.0.1</host>
      <port>{proxy_port}</port>
    </proxy>""" for scheme in ("https", "http"))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0">
  <mirrors>
    <mirror>
      <id>central-origin</id>
      <mirrorOf>*</mirrorOf>
      <url>{repository_url}</url>
    </mirror>
  </mirrors>
  <proxies>{proxies}
  </proxies>
</settings>
"""


def truststore(path: Path, *cas: Path) -> Path:
    """A PKCS12 truststore holding each CA (PEM), made with keytool as README.md tells
    users to."""
    for i, ca in enumerate(cas):
        out = subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", f"ca{i}", "-file", str(ca),
                              "-keystore", str(path), "-storetype", "PKCS12", "-storepass", STOREPASS],
                             capture_output=True, text=True, env=java_env(), timeout=WAIT * 2, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
    return path


def java_env() -> dict[str, str]:
    """No JVM options from the machine: they would change what Maven trusts or how it connects."""
    drop = {"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "MAVEN_OPTS", "MAVEN_ARGS", "MAVEN_CONFIG"}
    return {k: v for k, v in clean_env().items() if k not in drop}


def extension_project(directory: Path, extension: Release) -> Path:
    """A pom-packaging project whose .mvn/extensions.xml names `extension`. Maven resolves
    a core extension and its dependencies from the repositories before it builds anything,
    and the validate phase of a pom-packaging project binds no plugin, so the run needs
    nothing but what the fake repository serves."""
    (directory / ".mvn").mkdir(parents=True)
    (directory / ".mvn" / "extensions.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<extensions xmlns="http://maven.apache.org/EXTENSIONS/1.0.0">\n'
        f"  <extension>\n    <groupId>{extension.group}</groupId>\n"
        f"    <artifactId>{extension.artifact_id}</artifactId>\n    <version>{extension.version}</version>\n"
        "  </extension>\n</extensions>\n")
    (directory / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n  <modelVersion>4.0.0</modelVersion>\n'
        "  <groupId>app.example</groupId>\n  <artifactId>app</artifactId>\n  <version>1</version>\n"
        "  <packaging>pom</packaging>\n</project>\n")
    return directory


@dataclass
class MavenRun:
    returncode: int
    output: str
    local_repo: Path

    def file(self, path: str) -> bytes:
        return (self.local_repo / path.lstrip("/")).read_bytes()


def run_maven(project: Path, work: Path, repository_url: str, proxy_url: str, proxy_port: int,
              trust: Path) -> MavenRun:
    """`mvn -B -C validate` in `project` with settings, global settings, local repository
    and truststore of its own; -C makes any checksum disagreement fail the build."""
    settings = work / "settings.xml"
    settings.write_text(settings_xml(repository_url, proxy_port))
    empty = work / "global-settings.xml"
    empty.write_text('<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0"/>\n')
    local_repo = work / "m2-repository"
    env = {**java_env(), "HOME": str(work), "MAVEN_SKIP_RC": "1",  # no /etc/mavenrc, ~/.mavenrc
           # Set to show they change nothing: Maven reads <proxies> from settings.xml only.
           "HTTPS_PROXY": proxy_url, "HTTP_PROXY": proxy_url,
           "MAVEN_OPTS": f"-Djavax.net.ssl.trustStore={trust} -Djavax.net.ssl.trustStorePassword={STOREPASS}"}
    cmd = [shutil.which("mvn") or "mvn", "-B", "-C", "-e", "-s", str(settings), "-gs", str(empty),
           f"-Dmaven.repo.local={local_repo}", "validate"]
    out = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env, timeout=WAIT * 6, check=False)
    return MavenRun(out.returncode, out.stdout + out.stderr, local_repo)


def maven_available() -> bool:
    return shutil.which("mvn") is not None and shutil.which("keytool") is not None
