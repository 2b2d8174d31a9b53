"""The token bucket behind the per-connection frame rate and the typing rate."""
from __future__ import annotations

from skyeim.protocol import TokenBucket


def test_a_full_bucket_gives_its_burst_then_refuses(clock):
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_it_refills_at_its_rate_up_to_the_burst(clock):
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    for _ in range(3):
        bucket.take()
    clock.advance(0.5)                  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.advance(60)                   # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def test_wait_time_says_when_the_next_token_is_there(clock):
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    assert bucket.wait_time() == 0.0
    bucket.take()
    assert bucket.wait_time() == 0.25
    clock.advance(0.25)
    assert bucket.wait_time() == 0.0 and bucket.take()
