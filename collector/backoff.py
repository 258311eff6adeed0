"""The one retry policy: exponential backoff with full jitter and a cap.

Every retry loop of the package takes its delay from here: the agent's sender (a broken
stream, a retriable ack), the device adapters' reconnects (collector/agent/sources/gnmi.py),
and the aggregator's consume loop after a Kafka error, its restore of an unreadable
checkpoint (collector/aggregate/service.py) and its dead-letter copies (dead_letter.py).
"Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): the delay is uniform
in [0, min(max_s, initial_s * 2**attempt)], so many agents retrying after one outage spread
out instead of arriving together. Callers wait on their shutdown event, never a bare sleep.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**62 * any sane initial delay is far above any cap: larger exponents only risk overflow.
_MAX_EXPONENT = 62


def backoff_delay(
    attempt: int, initial_s: float, max_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry): uniform in
    [0, min(max_s, initial_s * 2**attempt)]. `rand` returns [0, 1) (tests pin it)."""
    cap = min(max_s, initial_s * (2 ** min(max(attempt, 0), _MAX_EXPONENT)))
    return cap * rand()
