"""HuggingFace: registry-specific handling (being written)."""

from __future__ import annotations

from mirrorgate.protocols import Protocol


class HuggingFace(Protocol):
    name = "huggingface"
