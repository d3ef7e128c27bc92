"""One computation per key at a time, shared by every caller that asks meanwhile: a
credential check, a checksum-database lookup, a repodata download."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """`run(key, start)` awaits the computation running for `key`, starting it with
    `start()` if none is. A caller that goes away does not cancel it for the others.

    A computation must keep its result wherever callers look first *before* it returns:
    a caller that arrives after it finished, but before it left this table, gets its
    result here, and the next one finds it kept."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(start())
            task.add_done_callback(lambda done: self._leave(key, done))
        return await asyncio.shield(task)

    def _leave(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
