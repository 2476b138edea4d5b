"""Deadline and Backoff, exactly: the countdown on the given clock, the ``<= 0`` expiry boundary, a shortened
deadline on the same clock, the exponential delays (base * 2**attempt, capped, scaled by the jitter draw),
the retry budget counted from attempt 0, and a pause shortened to half of the time left."""

from __future__ import annotations

import pytest

from consumers.core.retry import Backoff, Deadline


class FakeClock:
    """A monotonic clock that starts far from 0 (so a sum and a difference of its readings differ)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------ Deadline


def test_remaining_counts_down_from_the_given_seconds_on_the_given_clock():
    clock = FakeClock(1000.0)
    deadline = Deadline(5.0, clock=clock)
    assert deadline.remaining() == 5.0
    clock.t += 2.0
    assert deadline.remaining() == 3.0
    clock.t += 4.0
    assert deadline.remaining() == -1.0


def test_a_deadline_expires_when_nothing_is_left_and_not_before():
    clock = FakeClock(1000.0)
    deadline = Deadline(1.0, clock=clock)
    clock.t += 0.5
    assert deadline.expired() is False  # half a second left: not expired (not "<= 1")
    clock.t += 0.5
    assert deadline.expired() is True  # exactly 0 left counts as expired
    clock.t += 1.0
    assert deadline.expired() is True


def test_a_shortened_deadline_ends_earlier_and_keeps_counting_on_the_same_clock():
    clock = FakeClock(1000.0)
    deadline = Deadline(10.0, clock=clock)
    shorter = deadline.shortened(4.0)
    assert shorter.remaining() == 6.0
    clock.t += 5.0
    assert shorter.remaining() == 1.0 and deadline.remaining() == 5.0
    assert deadline.shortened(0.0).remaining() == 5.0


def test_a_never_deadline_has_infinite_time_left():
    never = Deadline.never()
    assert never.remaining() == float("inf") and not never.expired()


# ------------------------------------------------------------------ Backoff.delay


def test_delays_double_from_the_base_from_attempt_zero_and_stop_at_the_cap():
    # GIVEN the largest jitter draw (1.0): the delay is the exponential ceiling itself
    b = Backoff(base_s=0.25, cap_s=3.0, rand=lambda: 1.0)
    assert [b.delay(a) for a in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_jitter_draw_scales_the_delay():
    # full jitter: uniform(0, ceiling) = draw * ceiling
    b = Backoff(base_s=0.25, cap_s=3.0, rand=lambda: 0.5)
    assert [b.delay(a) for a in range(3)] == [0.125, 0.25, 0.5]


# ------------------------------------------------------------------ Backoff.wait


def test_the_retry_budget_allows_max_attempts_minus_one_waits():
    # GIVEN at most 3 attempts: two waits (before attempts 1 and 2), then no more
    slept: list[float] = []
    b = Backoff(base_s=0.1, max_attempts=3, sleep=slept.append, rand=lambda: 1.0)
    assert [b.wait(a, Deadline.never()) for a in range(5)] == [True, True, False, False, False]
    assert slept == [0.1, 0.2]  # no sleep once the budget is spent


def test_a_single_attempt_budget_never_waits():
    slept: list[float] = []
    assert Backoff(max_attempts=1, sleep=slept.append).wait(0, Deadline.never()) is False
    assert slept == []


def test_no_wait_when_less_than_the_base_delay_is_left():
    slept: list[float] = []
    b = Backoff(base_s=0.05, sleep=slept.append, rand=lambda: 1.0)
    assert b.wait(0, Deadline(0.01, clock=FakeClock())) is False
    assert b.wait(0, Deadline(-1.0, clock=FakeClock())) is False
    assert slept == []


def test_the_full_jittered_pause_is_slept_when_it_fits():
    slept: list[float] = []
    b = Backoff(base_s=0.1, cap_s=2.0, sleep=slept.append, rand=lambda: 0.5)
    assert b.wait(3, Deadline(10.0, clock=FakeClock())) is True
    assert slept == [0.4]  # 0.5 * 0.1 * 2**3


def test_a_pause_longer_than_the_time_left_is_halved_to_fit():
    # GIVEN 1 s left and a jittered pause of 2 s
    slept: list[float] = []
    b = Backoff(base_s=0.5, cap_s=2.0, sleep=slept.append, rand=lambda: 1.0)
    # WHEN waiting before retry 2 THEN it sleeps half the time left, and says to try again
    assert b.wait(2, Deadline(1.0, clock=FakeClock())) is True
    assert slept == [0.5]


def test_a_pause_below_one_second_is_slept():
    slept: list[float] = []
    b = Backoff(base_s=0.05, cap_s=2.0, sleep=slept.append, rand=lambda: 1.0)
    assert b.wait(0, Deadline(30.0, clock=FakeClock())) is True
    assert slept == [pytest.approx(0.05)]
