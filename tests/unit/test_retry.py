"""Backoff with full jitter inside a deadline."""

from consumers.core.retry import Backoff, Deadline


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_full_jitter_grows_exponentially_up_to_the_cap():
    b = Backoff(base_s=0.1, cap_s=1.0, rand=lambda: 1.0)
    assert [b.delay(a) for a in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert Backoff(base_s=0.1, rand=lambda: 0.0).delay(5) == 0.0


def test_wait_never_sleeps_past_the_deadline_and_uses_the_time_left():
    clock = FakeClock()
    deadline = Deadline(1.0, clock=clock)
    b = Backoff(base_s=0.05, cap_s=10.0, max_attempts=100, sleep=clock.sleep, rand=lambda: 1.0)
    attempts = 0
    while b.wait(attempts, deadline):
        attempts += 1
        assert clock.t < 1.0
    assert attempts >= 5  # long pauses were halved, not given up on
    assert deadline.remaining() <= 0.05


def test_retry_budget():
    b = Backoff(max_attempts=3, sleep=lambda s: None)
    d = Deadline.never()
    assert [b.wait(a, d) for a in range(4)] == [True, True, False, False]


def test_shortened_deadline():
    clock = FakeClock()
    d = Deadline(10.0, clock=clock)
    assert d.shortened(4.0).remaining() == 6.0


def test_no_retry_when_only_the_base_delay_is_left():
    # exactly base_s left: another try could not both wait and run before the deadline (the boundary counts)
    from consumers.core.retry import Backoff, Deadline

    slept: list[float] = []
    backoff = Backoff(base_s=0.05, sleep=slept.append, rand=lambda: 1.0)
    assert backoff.wait(0, Deadline(0.05, clock=lambda: 0.0)) is False
    assert slept == []


def test_a_zero_pause_does_not_call_sleep():
    from consumers.core.retry import Backoff, Deadline

    slept: list[float] = []
    assert Backoff(sleep=slept.append, rand=lambda: 0.0).wait(0, Deadline(10)) is True
    assert slept == []
