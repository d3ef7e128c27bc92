"""PyPI: simple pages from mirrors point at the mirror (often relatively, as
`../../packages/…`); they are rewritten to absolute files.pythonhosted.org URLs. Files
live at a path that is the BLAKE2b-256 of their content, so mirror bytes are checked
against the path itself."""

from __future__ import annotations

import json
import re
from html import escape, unescape
from urllib.parse import urljoin, urlsplit

from mirrorgate.protocols import Digest, Protocol, RewriteContext, RewriteError

# /packages/<2 hex>/<2 hex>/<60 hex>/<filename>: warehouse's PATH_HASHER ("blake2_256").
HASH_PATH = re.compile(r"/packages/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{60})/([^/]+)$")
FILE_PATH = re.compile(r"^/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{60})/[^/]+$")
HREF = re.compile(r'(<a\s[^>]*?href=)(["\'])(.*?)\2', re.IGNORECASE | re.DOTALL)

DEFAULT_FILES = "https://files.pythonhosted.org/packages/"


def canonical_file_url(link: str, page_url: str, files_base: str) -> str:
    """The origin URL of a file link, fragment kept; RewriteError if the link does not
    carry the content hash (a Nexus-style mirror), which no rewrite can recover."""
    absolute = urljoin(page_url, link)
    parts = urlsplit(absolute)
    m = HASH_PATH.search(parts.path)
    if not m:
        raise RewriteError(f"{link!r} does not name a file by its hash")
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{files_base.rstrip('/')}/{'/'.join(m.groups())}{fragment}"


class PypiSimple(Protocol):
    name = "pypi-simple"
    options = ("files",)

    def wants_rewrite(self, path: str) -> bool:
        return True

    def rewrite(self, path: str, content_type: str, body: bytes, ctx: RewriteContext) -> bytes | None:
        if path.rstrip("/") == "":
            return None  # the index of all projects links to project pages, not files
        files = ctx.options.get("files", DEFAULT_FILES)
        if "json" in content_type:
            doc = json.loads(body)
            for f in doc.get("files", []):
                f["url"] = canonical_file_url(f["url"], ctx.page_url, files)
            return json.dumps(doc, separators=(",", ":")).encode()

        def fix(m: re.Match) -> str:
            href = unescape(m.group(3))
            return f"{m.group(1)}{m.group(2)}{escape(canonical_file_url(href, ctx.page_url, files))}{m.group(2)}"

        return HREF.sub(fix, body.decode("utf-8")).encode("utf-8")


class PypiFiles(Protocol):
    name = "pypi-files"

    def checks(self, path: str) -> bool:
        return file_digest(path) is not None

    async def expect(self, path: str, url: str, options: dict, fetch) -> Digest | None:
        return file_digest(path)


def file_digest(path: str) -> Digest | None:
    m = FILE_PATH.match(path)
    return Digest("blake2b-256", bytes.fromhex("".join(m.groups()))) if m else None
