"""Where cached bodies and their index live.

`Store` is the interface the relay uses; `DiskStore` implements it with one file per body
and a SQLite index, so that the index survives restarts and a second backend (an
S3-compatible object store for fleet mode) can stand beside it.

Crash safety: a body is written to `tmp/`, checked, synced and renamed into `objects/`
before its index row is committed. A crash at any point leaves either a temporary file or
an unindexed object, both removed at the next start; never a served partial file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from cachetools import LRUCache

from mirrorgate.cache.policy import Entry

log = logging.getLogger("mirrorgate.cache")

# How often last-access times are written back; LRU order needs no finer grain.
TOUCH_FLUSH_SECONDS = 5.0
# Index rows kept in memory, most recently looked up first, so that a hit costs no query.
ROWS_KEPT = 4096
# After an eviction pass the cache is this fraction of its bound, so that one new entry
# does not set off a pass of its own.
EVICT_TO = 0.9


class Writer:
    """A body being written. Its descriptor is also read by every client that joined the
    fill, with pread, while it grows."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.written += len(data)

    def sync(self) -> None:
        os.fsync(self.fd)

    def discard(self) -> None:
        """Drop the file; readers holding a descriptor keep reading until they close it."""
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class Store(Protocol):
    def lookup(self, key: str) -> Entry | None: ...
    def open(self, entry: Entry) -> int: ...
    def begin(self, expected_size: int | None) -> Writer | None: ...
    def spool(self) -> Writer | None: ...
    def publish(self, writer: Writer, entry: Entry) -> Entry: ...
    def revalidated(self, entry: Entry, headers: tuple[tuple[str, str], ...], now: float) -> Entry: ...
    def touch(self, key: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def purge(self, *, url: str | None = None, prefix: str | None = None, everything: bool = False) -> int: ...
    def usage(self) -> dict: ...
    def close(self) -> None: ...


def object_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class _Usage:
    entries: int = 0
    bytes: int = 0


def _claim(root: Path) -> int:
    """Hold the directory for this process, or refuse. Two processes on one directory
    would each delete the other's fills at start-up, count sizes apart and race on
    publication (see docs/benchmarks.md, past one core); each needs its own for now."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise OSError(f"another Mirrorgate process (pid {holder}) is using it; "
                      "give each process a cache_dir of its own") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class DiskStore:
    def __init__(self, root: Path, max_size: int, min_free: int) -> None:
        self.root = root
        self.max_size = max_size
        self.min_free = min_free
        self.objects = root / "objects"
        self._objects_dir = str(self.objects)
        self.tmp = root / "tmp"
        for d in (self.objects, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = _claim(root)
        self.db = sqlite3.connect(root / "index.sqlite", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS entries (
            key TEXT PRIMARY KEY, url TEXT NOT NULL, name TEXT NOT NULL, cls TEXT NOT NULL,
            status INTEGER NOT NULL, headers TEXT NOT NULL, size INTEGER NOT NULL,
            stored_at REAL NOT NULL, validated_at REAL NOT NULL, last_access REAL NOT NULL,
            filled_by TEXT NOT NULL)""")
        self.db.execute("CREATE INDEX IF NOT EXISTS by_url ON entries(url)")
        self.db.execute("CREATE INDEX IF NOT EXISTS by_access ON entries(last_access)")
        self._touched: dict[str, float] = {}
        # This process is the index's only writer: every write below drops its row here.
        self._rows: LRUCache[str, Entry] = LRUCache(maxsize=ROWS_KEPT)
        self._last_flush = time.monotonic()
        self._last_no_room_log = 0.0
        self._usage = _Usage()
        self.recover()

    # ---- start-up ----------------------------------------------------------------------

    def recover(self) -> None:
        """Remove what a crash can leave behind: temporary files, bodies without an index
        row, rows without a body."""
        removed = 0
        for p in self.tmp.iterdir():
            p.unlink(missing_ok=True)
            removed += 1
        sizes = dict(self.db.execute("SELECT name, size FROM entries"))
        on_disk = set()
        for sub in self.objects.iterdir():
            for p in sub.iterdir() if sub.is_dir() else [sub]:
                # A body whose size differs from its row is as untrustworthy as one without.
                if p.name in sizes and p.stat().st_size == sizes[p.name]:
                    on_disk.add(p.name)
                else:
                    p.unlink(missing_ok=True)
                    removed += 1
        missing = set(sizes) - on_disk
        if missing:
            self.db.executemany("DELETE FROM entries WHERE name = ?", [(n,) for n in missing])
        if removed or missing:
            log.info("Cache recovery: removed %d orphaned files and %d index rows without a body",
                     removed, len(missing))
        count, total = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
        self._usage = _Usage(count, total)

    # ---- reading -------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        # A string, not a Path: opening a body is on every hit's way.
        return f"{self._objects_dir}/{name[:2]}/{name}"

    def lookup(self, key: str) -> Entry | None:
        entry = self._rows.get(key)
        if entry is not None:
            return entry
        row = self.db.execute(
            "SELECT key, url, cls, status, headers, size, stored_at, validated_at, filled_by, name "
            "FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        k, url, cls, status, headers, size, stored_at, validated_at, filled_by, name = row
        entry = self._rows[key] = Entry(k, url, cls, status, tuple(tuple(h) for h in json.loads(headers)), size,
                                        stored_at, validated_at, filled_by, name)
        return entry

    def open(self, entry: Entry) -> int:
        """A descriptor on the body; FileNotFoundError if it vanished (then the row goes)."""
        try:
            return os.open(self._path(entry.name), os.O_RDONLY)
        except FileNotFoundError:
            self.delete(entry.key)
            raise

    def touch(self, key: str) -> None:
        self._touched[key] = time.time()
        if time.monotonic() - self._last_flush > TOUCH_FLUSH_SECONDS:
            self._flush_touches()

    def _flush_touches(self) -> None:
        if self._touched:
            self.db.executemany("UPDATE entries SET last_access = ? WHERE key = ?",
                                [(t, k) for k, t in self._touched.items()])
            self._touched.clear()
        self._last_flush = time.monotonic()

    # ---- writing -------------------------------------------------------------------------

    def _room_for(self, expected: int) -> bool:
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        if free - expected >= self.min_free:
            return True
        now = time.monotonic()
        if now - self._last_no_room_log > 60:
            self._last_no_room_log = now
            log.warning("Cache disk %s has %d MiB free (keeping %d MiB free): proxying without caching "
                        "until there is room", self.root, free >> 20, self.min_free >> 20)
        return False

    def spool(self) -> Writer | None:
        """A temporary body that will never be published (a response not to be kept, but
        shared by every client waiting for it)."""
        return self.begin(None)

    def begin(self, expected_size: int | None) -> Writer | None:
        if not self._room_for(expected_size or 0):
            return None
        fd, path = tempfile.mkstemp(dir=self.tmp, prefix="fill-")
        return Writer(fd, Path(path))

    def publish(self, writer: Writer, entry: Entry) -> Entry:
        """Make a checked body visible under its key. The caller has synced it."""
        if self.max_size == 0:  # the cache is off: bodies are only spooled, to be checked
            writer.path.unlink(missing_ok=True)  # the descriptor stays open for its readers
            return entry
        name = object_name(entry.key)
        target = Path(self._path(name))
        target.parent.mkdir(exist_ok=True)
        old = self.lookup(entry.key)
        os.replace(writer.path, target)
        now = time.time()
        entry = replace(entry, name=name)
        self.db.execute(
            "INSERT OR REPLACE INTO entries (key, url, name, cls, status, headers, size, stored_at, validated_at, "
            "last_access, filled_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.key, entry.url, name, entry.cls, entry.status, json.dumps(entry.headers), entry.size,
             entry.stored_at, entry.validated_at, now, entry.filled_by))
        self._rows.pop(entry.key, None)
        if old is not None:
            self._usage.entries -= 1
            self._usage.bytes -= old.size
        self._usage.entries += 1
        self._usage.bytes += entry.size
        if self._usage.bytes > self.max_size:
            self._evict()
        return entry

    def revalidated(self, entry: Entry, headers: tuple[tuple[str, str], ...], now: float) -> Entry:
        self.db.execute("UPDATE entries SET headers = ?, validated_at = ?, last_access = ? WHERE key = ?",
                        (json.dumps(headers), now, now, entry.key))
        self._rows.pop(entry.key, None)
        return replace(entry, headers=headers, validated_at=now)

    # ---- removing ------------------------------------------------------------------------

    def _remove(self, rows: Iterable[tuple[str, str, int]]) -> int:
        n = 0
        for key, name, size in rows:
            self.db.execute("DELETE FROM entries WHERE key = ?", (key,))
            self._rows.pop(key, None)
            Path(self._path(name)).unlink(missing_ok=True)
            self._touched.pop(key, None)
            self._usage.entries -= 1
            self._usage.bytes -= size
            n += 1
        return n

    def delete(self, key: str) -> None:
        self._remove(self.db.execute("SELECT key, name, size FROM entries WHERE key = ?", (key,)).fetchall())

    def _evict(self) -> None:
        self._flush_touches()
        goal = int(self.max_size * EVICT_TO)
        evicted = 0
        while self._usage.bytes > goal:
            rows = self.db.execute("SELECT key, name, size FROM entries ORDER BY last_access LIMIT 64").fetchall()
            if not rows:
                break
            for row in rows:
                if self._usage.bytes <= goal:
                    break
                evicted += self._remove([row])
        log.info("Cache over %d MiB: evicted %d least recently used entries", self.max_size >> 20, evicted)

    def purge(self, *, url: str | None = None, prefix: str | None = None, everything: bool = False) -> int:
        if everything:
            rows = self.db.execute("SELECT key, name, size FROM entries").fetchall()
        elif url is not None:
            rows = self.db.execute("SELECT key, name, size FROM entries WHERE url = ?", (url,)).fetchall()
        elif prefix is not None:
            rows = self.db.execute("SELECT key, name, size FROM entries WHERE substr(url, 1, ?) = ?",
                                   (len(prefix), prefix)).fetchall()
        else:
            raise ValueError("purge needs url, prefix or everything")
        return self._remove(rows)

    def usage(self) -> dict:
        return {"entries": self._usage.entries, "bytes": self._usage.bytes, "max_bytes": self.max_size}

    def close(self) -> None:
        self._flush_touches()
        self.db.close()
        os.close(self._lock)  # and with it the claim on the directory
