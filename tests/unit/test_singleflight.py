"""SingleFlight: one computation per key, shared, and gone from the table once done."""

from __future__ import annotations

import asyncio

import pytest

from mirrorgate.singleflight import SingleFlight


def test_callers_of_one_key_share_one_computation_and_a_caller_leaving_does_not_cancel_it():
    started: list[str] = []

    async def scenario():
        flights: SingleFlight[str] = SingleFlight()
        release = asyncio.Event()

        async def compute(key):
            started.append(key)
            await release.wait()
            return key.upper()

        callers = [asyncio.ensure_future(flights.run("a", lambda: compute("a"))) for _ in range(3)]
        other = asyncio.ensure_future(flights.run("b", lambda: compute("b")))
        await asyncio.sleep(0)
        callers[0].cancel()
        release.set()
        assert await asyncio.gather(*callers[1:], other) == ["A", "A", "B"]
        assert callers[0].cancelled()
        # Done and gone: the next caller starts a new computation.
        assert await flights.run("a", lambda: compute("a")) == "A"

    asyncio.run(scenario())
    assert started == ["a", "b", "a"]


def test_a_failed_computation_fails_its_callers_and_is_not_kept():
    calls = []

    async def scenario():
        flights: SingleFlight[int] = SingleFlight()

        async def flaky():
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionError("passing trouble")
            return 7

        with pytest.raises(ConnectionError):
            await flights.run("k", flaky)
        assert await flights.run("k", flaky) == 7

    asyncio.run(scenario())
    assert len(calls) == 2
