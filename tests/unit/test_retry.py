"""proxy/retry.py: exponential backoff with injected jitter."""

from __future__ import annotations

import random

import pytest

from durable_core.retry import RetryPolicy


def test_defaults_are_restates() -> None:
    policy = RetryPolicy()
    assert (policy.initial_ms, policy.factor, policy.max_ms, policy.max_attempts) == (500, 2.0, 60_000, 70)


def test_delay_grows_by_factor_and_is_capped() -> None:
    policy = RetryPolicy(initial_ms=100, factor=3.0, max_ms=2_000, jitter=0.0)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [100, 300, 900, 2_000, 2_000, 2_000]


def test_retry_count_zero_behaves_like_the_first_retry() -> None:
    policy = RetryPolicy(initial_ms=100, jitter=0.0)
    assert policy.delay_ms(0) == policy.delay_ms(1) == 100


def test_huge_retry_counts_stay_capped() -> None:
    policy = RetryPolicy(initial_ms=500, max_ms=60_000, jitter=0.0)
    assert policy.delay_ms(1000) == 60_000


@pytest.mark.parametrize("retry_count", [1, 2, 5, 20])
def test_jitter_stays_within_its_spread(retry_count: int) -> None:
    policy = RetryPolicy(initial_ms=1_000, factor=2.0, max_ms=8_000, jitter=0.1, rng=random.Random(7))
    base = min(1_000 * 2 ** (retry_count - 1), 8_000)
    delays = [policy.delay_ms(retry_count) for _ in range(500)]
    assert all(base * 0.9 - 1 <= d <= base * 1.1 for d in delays)
    assert len(set(delays)) > 1, "jitter must actually spread the delays"


def test_jitter_is_deterministic_with_a_seeded_rng() -> None:
    a = RetryPolicy(rng=random.Random(42))
    b = RetryPolicy(rng=random.Random(42))
    assert [a.delay_ms(n) for n in range(1, 30)] == [b.delay_ms(n) for n in range(1, 30)]


def test_delay_is_never_negative() -> None:
    policy = RetryPolicy(initial_ms=0, jitter=1.0, rng=random.Random(1))
    assert all(policy.delay_ms(n) >= 0 for n in range(1, 50))


def test_exhausted_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (0, 1, 2, 3, 4)] == [False, False, False, True, True]


def test_zero_max_attempts_retries_forever() -> None:
    assert not RetryPolicy(max_attempts=0).exhausted(10**9)


def test_policies_compare_without_their_rng() -> None:
    assert RetryPolicy(rng=random.Random(1)) == RetryPolicy(rng=random.Random(2))
