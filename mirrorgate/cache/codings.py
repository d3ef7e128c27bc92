"""Undoing a content-coding, for the metadata bodies that must be rewritten."""

from __future__ import annotations

import zlib


def decode(body: bytes, coding: str) -> bytes:
    """The identity form of a body; ValueError for a coding this proxy cannot undo."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    raise ValueError(f"cannot decode content-coding {coding!r}")
