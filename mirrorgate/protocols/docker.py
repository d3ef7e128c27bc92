"""Docker Hub (registry v2): being written."""

from __future__ import annotations

from mirrorgate.protocols import Protocol


class TokenBook:
    pass


class DockerRegistry(Protocol):
    name = "docker-registry"

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens


class DockerAuth(Protocol):
    name = "docker-auth"

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens
