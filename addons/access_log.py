"""One JSON line per request that a rule owns: rule, upstream, fallback steps, status,
bytes and duration. The schema is documented in docs/access-log.md."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TextIO

from mitmproxy import ctx, exceptions, http

from addons.options import add_option

from addons.router import note
from mirrorgate.metrics import Metrics

log = logging.getLogger("mirrorgate.access")


def access_record(flow: http.HTTPFlow, now: float) -> dict | None:
    n = note(flow)
    if n is None or n.trace is None:
        return None
    resp = flow.response
    size = n.bytes or (len(resp.raw_content) if resp is not None and resp.raw_content else 0)
    return {
        "ts": round(now, 3),
        "client": flow.client_conn.peername[0] if flow.client_conn.peername else None,
        "method": flow.request.method,
        "url": flow.request.headers.get("X-Mirrorgate-Target") or flow.request.pretty_url,
        **n.trace.record(),
        "status": resp.status_code if resp is not None else None,
        "bytes": size,
        "duration_ms": round((now - flow.request.timestamp_start) * 1000, 1),
        "error": flow.error.msg if flow.error else None,
    }


class AccessLog:
    """Also counts each record into the metrics: one source for both."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._file: TextIO | None = None
        self.metrics = metrics

    def load(self, loader) -> None:
        add_option(loader, "access_log", str, "-",
                          "Where the JSON access log goes: '-' for the event log, a path to append "
                          "to a file instead, or '' for nowhere.")

    def configure(self, updated: set[str]) -> None:
        if "access_log" not in updated:
            return
        if self._file:
            self._file.close()
            self._file = None
        if ctx.options.access_log not in ("", "-"):
            try:
                self._file = Path(ctx.options.access_log).open("a", encoding="utf-8", buffering=1)
            except OSError as e:
                raise exceptions.OptionsError(f"cannot open access_log {ctx.options.access_log!r}: {e}") from None

    def _emit(self, flow: http.HTTPFlow) -> None:
        record = access_record(flow, time.time())
        if record is None:
            return
        if self.metrics is not None:
            self.metrics.request(record)
        if not self._file and ctx.options.access_log != "-":
            return  # access_log='': counted, written nowhere
        line = json.dumps(record, separators=(",", ":"))
        if self._file:
            self._file.write(line + "\n")
        else:
            log.info(line)

    def response(self, flow: http.HTTPFlow) -> None:
        self._emit(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._emit(flow)

    def done(self) -> None:
        if self._file:
            self._file.close()
