"""Hot reload of the rules file: the decisions, without I/O beyond one stat.

When is a changed rules file read again, and what did the new one change? The Rules
addon (addons/rules.py) polls, reads, validates and swaps; this module only decides.

A file is read once its stamp (mtime, size, inode, device) differs from the version
last acted on and has stayed the same for one whole poll. That way a file still being
written (truncated, then filled) is not parsed half-way, a replacement by rename (an
editor's save, a Kubernetes ConfigMap's symlink swap) changes the inode and is noticed
even if mtime and size happen to match, and a file that is briefly missing between a
delete and a create is not reported as missing. The stamp of a version is taken before
it is read, never after, so that a write racing with the read shows as a change at the
next poll and is read again rather than missed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from mirrorgate.rules import Rule, RuleSet

_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_INTERVAL_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


# Shorter polls would only burn a core; editors and deploy tools are slower than this.
MIN_INTERVAL = 0.01


def parse_interval(text: str) -> float:
    """The rules_reload_interval option in seconds: '1s', '250ms', '2m', a bare number
    of seconds, or 0 for no polling."""
    m = _INTERVAL_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an interval (examples: 1s, 250ms; 0 turns checking off)")
    seconds = float(m.group(1)) * _INTERVAL_UNITS[m.group(2)]
    if 0 < seconds < MIN_INTERVAL:
        raise ValueError(f"{text!r} is too short: use 0 (off) or at least {MIN_INTERVAL * 1000:.0f}ms")
    return seconds


@dataclass(frozen=True)
class FileStamp:
    """What a stat says about one version of a file."""

    mtime_ns: int
    size: int
    inode: int
    device: int


def file_stamp(path: str | os.PathLike) -> FileStamp | None:
    """The stamp of the file at `path` (following symlinks), or None if it cannot be
    stat'ed: reading it then gives the precise error."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


_NOT_SEEN = object()


class ChangeWatch:
    """Decides, from one stamp per poll, when the file is due to be read again."""

    def __init__(self, acted_on: FileStamp | None) -> None:
        # The version last loaded or rejected: it is not read again until it changes,
        # so that one bad edit is reported once, not at every poll.
        self.acted_on = acted_on
        self._candidate: object = _NOT_SEEN

    def observe(self, now: FileStamp | None) -> bool:
        """True when the file differs from the version acted on and looked the same at
        the poll before: it has settled and is due to be read."""
        if now == self.acted_on:
            self._candidate = _NOT_SEEN
            return False
        if now != self._candidate:
            self._candidate = now  # changed, or still changing: look again next poll
            return False
        return True

    def acted(self, stamp: FileStamp | None) -> None:
        """The version with `stamp` was read (and loaded or rejected)."""
        self.acted_on = stamp
        self._candidate = _NOT_SEEN


def _meaning(rule: Rule) -> Rule:
    # Where a rule sits in the file is no part of what it does.
    return dataclasses.replace(rule, where="")


def describe_change(old: RuleSet, old_profile: str, new: RuleSet, new_profile: str) -> str:
    """One line for the log: which rules a reload added, removed or changed."""
    before = {r.name: _meaning(r) for r in old.rules}
    after = {r.name: _meaning(r) for r in new.rules}
    parts = []
    for label, names in (("added", [n for n in after if n not in before]),
                         ("removed", [n for n in before if n not in after]),
                         ("changed", [n for n in after if n in before and after[n] != before[n]])):
        if names:
            parts.append(f"{label} {', '.join(names)}")
    if old_profile != new_profile:
        parts.append(f"profile {old_profile} -> {new_profile}")
    return "; ".join(parts) or "no rule changed"
