"""Circuit breakers for mirrors: a mirror that keeps failing is skipped for a cool-down,
then probed by one request at a time (half-open) until it answers well again.

Time is passed in, so the state machine is tested without waiting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mirrorgate.rules import CircuitPolicy


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class Circuit:
    policy: CircuitPolicy
    state: State = State.CLOSED
    failures: int = 0  # consecutive
    opened_at: float = 0.0
    probing: bool = False
    # Latency of successful first bytes, smoothed; the seed of ranking mirrors by speed.
    latency_ewma: float | None = None

    def admit(self, now: float) -> bool:
        """Whether a request may try this mirror now. Admitting a half-open probe
        reserves it: the caller must report success, failure or abandon."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if now - self.opened_at < self.policy.cooldown:
                return False
            self.state = State.HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def succeeded(self, now: float, latency: float | None = None) -> None:
        self.state = State.CLOSED
        self.failures = 0
        self.probing = False
        if latency is not None:
            self.latency_ewma = latency if self.latency_ewma is None else 0.8 * self.latency_ewma + 0.2 * latency

    def failed(self, now: float) -> None:
        self.probing = False
        self.failures += 1
        if self.state is State.HALF_OPEN or self.failures >= self.policy.failures:
            self.state = State.OPEN
            self.opened_at = now

    def abandoned(self) -> None:
        """The attempt ended without a verdict (the client went away): free the probe."""
        self.probing = False


class CircuitBoard:
    """One circuit per mirror URL prefix; kept across rule reloads."""

    def __init__(self) -> None:
        self._circuits: dict[str, Circuit] = {}

    def get(self, mirror_url: str, policy: CircuitPolicy) -> Circuit:
        c = self._circuits.get(mirror_url)
        if c is None:
            c = self._circuits[mirror_url] = Circuit(policy)
        else:
            c.policy = policy
        return c

    def snapshot(self) -> dict[str, Circuit]:
        return dict(self._circuits)
