"""Go: the go command asks `<proxy>/sumdb/<name>/supported` before using the proxy for
the checksum database; a 404 there sends it straight to sum.golang.org. The proxy
answers it itself."""

from __future__ import annotations

from mirrorgate.protocols import LocalAnswer, Protocol


class GoSumdb(Protocol):
    name = "go-sumdb"

    def local_answer(self, path: str) -> LocalAnswer | None:
        if path == "/supported":
            return LocalAnswer(200, b"", (("Content-Type", "text/plain; charset=utf-8"),
                                          ("Cache-Control", "public, max-age=86400")))
        return None
