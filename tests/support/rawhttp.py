"""A raw-socket HTTP/1.1 client for hostile-input tests.

It sends exactly the bytes it is given (no client library would send a malformed request
line or a lying Content-Length) and reads answers back within a deadline and a size
bound. `connect()` opens a plain connection to the proxy; `tunnel()` first CONNECTs to
an authority and wraps the socket in TLS, trusting the proxy's CA, so that the same bytes
can be sent to an intercepted https origin.

    with rawhttp.connect(("127.0.0.1", port)) as c:
        c.send(b"GET http://example.test/ HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n")
        reply = c.read_reply()          # Reply(status=200, ...) or Reply(status=None) on a close
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

MAX_HEAD = 256 * 1024
MAX_BODY = 1024 * 1024
# Whatever the request, an answer or a close must come within this many seconds; a
# connection still silent after it is a hang.
DEADLINE = 20.0


class Hang(AssertionError):
    """The server neither answered nor closed the connection within the deadline."""


@dataclass
class Reply:
    """One answer read from a connection, or the connection's end without one."""

    status: int | None = None  # None: the connection ended without (another) answer
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reset: bool = False  # the connection was reset rather than closed

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __str__(self) -> str:
        if self.status is None:
            return "connection closed without an answer" + (" (reset)" if self.reset else "")
        return f"{self.status} {self.reason}: {self.text[:300]!r}"


class Connection:
    """A socket and what has been read from it but not yet consumed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self._eof = False
        self.reset = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        """Send all of `data`; False if the server closed the connection first (it may have
        refused the request before reading all of it: its answer is still to be read)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            return False
        return True

    def half_close(self) -> None:
        """Tell the server nothing more is coming, and keep reading (plain sockets only:
        Python's TLS sockets cannot half-close)."""
        assert not isinstance(self.sock, ssl.SSLSocket), "TLS connections cannot be half-closed"
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # ---- reading ------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        if self._eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise Hang(f"no answer or close within the deadline; read so far: {self._buf[:200]!r}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise Hang(f"no answer or close within the deadline; read so far: {self._buf[:200]!r}") from None
        except ssl.SSLError:
            chunk = b""  # a TLS close without close_notify: the server is gone all the same
        except (ConnectionResetError, BrokenPipeError):
            self.reset = True
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _until(self, marker: bytes, limit: int, deadline: float) -> bytes | None:
        """Bytes up to and including `marker`, or None if the connection ended first."""
        while (i := self._buf.find(marker)) < 0:
            if len(self._buf) > limit:
                raise AssertionError(f"no {marker!r} within {limit} bytes")
            if not self._fill(deadline):
                return None
        out, self._buf = self._buf[: i + len(marker)], self._buf[i + len(marker):]
        return out

    def _exactly(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n and self._fill(deadline):
            pass
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _rest(self, limit: int, deadline: float) -> bytes:
        while len(self._buf) <= limit and self._fill(deadline):
            pass
        out, self._buf = self._buf[:limit], b""
        return out

    def read_reply(self, *, timeout: float = DEADLINE, head_request: bool = False,
                   max_body: int = MAX_BODY) -> Reply:
        """The next answer on this connection, or Reply(status=None) once it is closed.
        Raises Hang if neither comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        head = self._until(b"\r\n\r\n", MAX_HEAD, deadline)
        if head is None:
            return Reply(reset=self.reset)
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/") or not code.isdigit():
            raise AssertionError(f"not an HTTP status line: {lines[0][:200]!r}")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
        reply = Reply(int(code), reason.decode("latin-1"), headers)
        if head_request or reply.status in (204, 304) or 100 <= reply.status < 200:
            return reply
        if (reply.header("transfer-encoding") or "").lower() == "chunked":
            reply.body = self._chunked(max_body, deadline)
        elif (length := reply.header("content-length")) is not None:
            reply.body = self._exactly(min(int(length), max_body), deadline)
        else:
            reply.body = self._rest(max_body, deadline)
        return reply

    def _chunked(self, max_body: int, deadline: float) -> bytes:
        out = b""
        while len(out) <= max_body:
            line = self._until(b"\r\n", 1024, deadline)
            if line is None:
                break
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self._until(b"\r\n", MAX_HEAD, deadline)  # the end of the (empty) trailer
                break
            out += self._exactly(size, deadline)
            self._exactly(2, deadline)
        return out[:max_body]


def connect(proxy: tuple[str, int], *, timeout: float = DEADLINE) -> Connection:
    return Connection(socket.create_connection(proxy, timeout=timeout))


def tunnel(proxy: tuple[str, int], authority: str, ca: Path, server_hostname: str, *,
           timeout: float = DEADLINE) -> Connection:
    """A TLS connection to `authority` through the proxy's CONNECT, verified against `ca`."""
    conn = connect(proxy, timeout=timeout)
    try:
        conn.send(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        reply = conn.read_reply(timeout=timeout, head_request=True)
        if reply.status != 200:
            raise AssertionError(f"CONNECT {authority} answered {reply}")
        tls = ssl.create_default_context(cafile=str(ca)).wrap_socket(conn.sock, server_hostname=server_hostname)
        tls.settimeout(timeout)
        return Connection(tls)
    except BaseException:
        conn.close()
        raise


def once(proxy: tuple[str, int], data: bytes, *, timeout: float = DEADLINE, head_request: bool = False) -> Reply:
    """One request on a fresh plain connection to the proxy, and its answer."""
    with connect(proxy, timeout=timeout) as c:
        c.send(data)
        return c.read_reply(timeout=timeout, head_request=head_request)


def request_bytes(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]] | tuple = (),
                  body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    """A request exactly as given: nothing is added, escaped or checked."""
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return head + b"\r\n" + body
