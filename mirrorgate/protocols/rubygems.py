"""RubyGems: registry-specific handling (being written)."""

from __future__ import annotations

from mirrorgate.protocols import Protocol


class RubyGems(Protocol):
    name = "rubygems"
