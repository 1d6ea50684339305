"""Exponential backoff for failed attempts (pure; jitter comes from an injected rng)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Restate's defaults: 500 ms doubling to 60 s, pause after 70 attempts (0 = never pause)."""

    initial_ms: int = 500
    factor: float = 2.0
    max_ms: int = 60_000
    max_attempts: int = 70
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay_ms(self, retry_count: int) -> int:
        """Delay before retry number `retry_count` (1-based), with +/- `jitter` spread."""
        base = min(self.initial_ms * self.factor ** max(retry_count - 1, 0), self.max_ms)
        spread = base * self.jitter
        return max(0, int(base + self.rng.uniform(-spread, spread)))

    def exhausted(self, retry_count: int) -> bool:
        """True when `retry_count` failed attempts mean: stop and pause."""
        return self.max_attempts > 0 and retry_count >= self.max_attempts
