"""The circuit breaker state machine, driven with explicit times."""

from __future__ import annotations

import pytest

from mirrorgate.circuit import Circuit, CircuitBoard, State
from mirrorgate.rules import CircuitPolicy

POLICY = CircuitPolicy(failures=3, cooldown=30.0)


def opened(at: float = 100.0) -> Circuit:
    c = Circuit(POLICY)
    for _ in range(3):
        assert c.admit(at)
        c.failed(at)
    assert c.state is State.OPEN
    return c


def test_new_circuit_is_closed():
    c = Circuit(POLICY)
    assert (c.state, c.failures, c.opened_at, c.probing, c.latency_ewma) == (State.CLOSED, 0, 0.0, False, None)


def test_closed_admits_everything():
    c = Circuit(POLICY)
    assert [c.admit(t) for t in (0.0, 0.0, 1.0, 1e9)] == [True, True, True, True]
    assert c.state is State.CLOSED
    assert c.probing is False


def test_opens_after_n_consecutive_failures():
    c = Circuit(POLICY)
    c.failed(10.0)
    c.failed(11.0)
    assert (c.state, c.failures) == (State.CLOSED, 2)
    assert c.admit(11.5) is True
    c.failed(12.0)
    assert (c.state, c.failures, c.opened_at) == (State.OPEN, 3, 12.0)


def test_one_failure_opens_when_policy_says_one():
    c = Circuit(CircuitPolicy(failures=1, cooldown=5.0))
    c.failed(7.0)
    assert (c.state, c.opened_at) == (State.OPEN, 7.0)
    assert c.admit(11.9) is False
    assert c.admit(12.0) is True


def test_success_resets_the_count():
    c = Circuit(POLICY)
    c.failed(1.0)
    c.failed(2.0)
    c.succeeded(3.0)
    assert (c.state, c.failures) == (State.CLOSED, 0)
    c.failed(4.0)
    c.failed(5.0)
    assert (c.state, c.failures) == (State.CLOSED, 2)
    c.failed(6.0)
    assert (c.state, c.opened_at) == (State.OPEN, 6.0)


def test_open_rejects_until_cooldown():
    c = opened(at=100.0)
    assert [c.admit(t) for t in (100.0, 110.0, 129.999)] == [False, False, False]
    assert c.state is State.OPEN
    assert c.probing is False


def test_after_cooldown_exactly_one_probe_is_admitted():
    c = opened(at=100.0)
    assert c.admit(130.0) is True
    assert (c.state, c.probing) == (State.HALF_OPEN, True)
    assert c.admit(130.0) is False
    assert c.admit(200.0) is False
    assert (c.state, c.probing) == (State.HALF_OPEN, True)


def test_probe_success_closes():
    c = opened(at=100.0)
    assert c.admit(131.0) is True
    c.succeeded(131.5, latency=0.25)
    assert (c.state, c.failures, c.probing) == (State.CLOSED, 0, False)
    assert [c.admit(132.0), c.admit(132.0)] == [True, True]


def test_probe_failure_reopens_with_fresh_cooldown():
    c = opened(at=100.0)
    assert c.admit(140.0) is True
    c.failed(141.0)
    assert (c.state, c.opened_at, c.probing) == (State.OPEN, 141.0, False)
    assert c.admit(170.999) is False
    assert c.state is State.OPEN
    assert c.admit(171.0) is True
    assert c.state is State.HALF_OPEN


def test_probe_failure_reopens_even_below_the_failure_count():
    c = Circuit(CircuitPolicy(failures=5, cooldown=10.0))
    for t in range(5):
        c.failed(float(t))
    assert c.state is State.OPEN
    assert c.admit(14.0) is True
    c.succeeded(14.0)
    for t in (20.0, 21.0, 22.0, 23.0):
        c.failed(t)
    assert c.state is State.CLOSED
    c.failed(24.0)
    assert (c.state, c.opened_at) == (State.OPEN, 24.0)
    assert c.admit(34.0) is True
    c.failed(35.0)  # one probe failure is enough, whatever the count
    assert (c.state, c.opened_at) == (State.OPEN, 35.0)


def test_abandoned_frees_the_probe():
    c = opened(at=100.0)
    assert c.admit(130.0) is True
    assert c.admit(130.0) is False
    c.abandoned()
    assert (c.state, c.probing) == (State.HALF_OPEN, False)
    assert c.admit(130.5) is True
    assert c.admit(130.5) is False


def test_abandoned_in_closed_state_changes_nothing():
    c = Circuit(POLICY)
    c.failed(1.0)
    c.abandoned()
    assert (c.state, c.failures, c.probing) == (State.CLOSED, 1, False)


def test_latency_ewma_updates_on_success():
    c = Circuit(POLICY)
    c.succeeded(1.0)
    assert c.latency_ewma is None
    c.succeeded(2.0, latency=1.0)
    assert c.latency_ewma == 1.0
    c.succeeded(3.0, latency=2.0)
    assert c.latency_ewma == pytest.approx(1.2)
    c.succeeded(4.0, latency=0.2)
    assert c.latency_ewma == pytest.approx(0.8 * 1.2 + 0.2 * 0.2)
    c.succeeded(5.0)
    assert c.latency_ewma == pytest.approx(1.0)
    c.failed(6.0)
    assert c.latency_ewma == pytest.approx(1.0)


def test_board_keeps_one_circuit_per_url():
    board = CircuitBoard()
    a = board.get("https://goproxy.cn/", POLICY)
    b = board.get("https://mirrors.aliyun.com/goproxy/", POLICY)
    assert a is not b
    assert board.get("https://goproxy.cn/", POLICY) is a
    a.failed(1.0)
    assert board.get("https://goproxy.cn/", POLICY).failures == 1
    assert board.get("https://mirrors.aliyun.com/goproxy/", POLICY).failures == 0
    assert board.snapshot() == {"https://goproxy.cn/": a, "https://mirrors.aliyun.com/goproxy/": b}


def test_board_updates_the_policy_and_keeps_the_state():
    board = CircuitBoard()
    c = board.get("https://m.example/", POLICY)
    c.failed(1.0)
    c.failed(2.0)
    strict = CircuitPolicy(failures=2, cooldown=5.0)
    again = board.get("https://m.example/", strict)
    assert again is c
    assert (c.policy, c.failures, c.state) == (strict, 2, State.CLOSED)
    c.failed(3.0)
    assert c.state is State.OPEN
    assert c.admit(7.9) is False
    assert c.admit(8.0) is True


def test_board_snapshot_is_a_copy():
    board = CircuitBoard()
    board.get("https://m.example/", POLICY)
    snap = board.snapshot()
    snap.clear()
    assert list(board.snapshot()) == ["https://m.example/"]
