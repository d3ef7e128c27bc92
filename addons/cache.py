"""Owns the cache's storage: its options, opening it at start-up (which removes what a
crash left behind) and closing it."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mitmproxy import ctx, exceptions

from addons.options import add_option

from mirrorgate.cache.store import DiskStore

log = logging.getLogger("mirrorgate.cache")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'20g', '512m', '1.5G', '100k' or a number of bytes."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 20g, 512m, 0)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mirrorgate")


class Cache:
    def __init__(self) -> None:
        self.store: DiskStore | None = None

    def load(self, loader) -> None:
        add_option(loader, "cache_dir", str, default_cache_dir(), "Directory of the artifact and metadata cache.")
        add_option(loader, "cache_max_size", str, "20g",
                          "Bound on the cache's size, e.g. 20g or 512m; least recently used entries are "
                          "evicted beyond it. 0 turns the cache off.")
        add_option(loader, "cache_min_free", str, "1g",
                          "Free space to leave on the cache's disk; with less, responses are proxied "
                          "without being cached.")

    def configure(self, updated: set[str]) -> None:
        if not {"cache_dir", "cache_max_size", "cache_min_free"} & updated:
            return
        try:
            max_size = parse_size(ctx.options.cache_max_size)
        except ValueError as e:
            raise exceptions.OptionsError(f"cache_max_size: {e}") from None
        try:
            min_free = parse_size(ctx.options.cache_min_free)
        except ValueError as e:
            raise exceptions.OptionsError(f"cache_min_free: {e}") from None
        old, self.store = self.store, None
        if old is not None:
            old.close()
        if max_size == 0:
            # Still a store: bodies that must be checked or rewritten are spooled there.
            log.info("Cache off (cache_max_size=0): nothing is kept")
        root = Path(os.path.expanduser(ctx.options.cache_dir))
        try:
            self.store = DiskStore(root, max_size, min_free)
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(f"cache_dir {str(root)!r} is not usable: {e}") from None
        usage = self.store.usage()
        log.info("Cache: %s, %d entries, %d MiB of %d MiB", root, usage["entries"], usage["bytes"] >> 20,
                 max_size >> 20)

    def current(self) -> DiskStore | None:
        return self.store

    def done(self) -> None:
        if self.store is not None:
            self.store.close()
