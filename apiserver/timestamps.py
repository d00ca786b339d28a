"""Timestamps as the API server writes them: metav1.Time (RFC 3339, UTC, whole seconds),
through machinery.times, the one place that writes and reads Kubernetes' time formats."""
from __future__ import annotations

import functools
import time

from machinery import times


def now() -> str:
    return _rfc3339(int(time.time()))


@functools.lru_cache(maxsize=2)  # formatted once a second, not once per write
def _rfc3339(seconds: int) -> str:
    return times.rfc3339(seconds)


def later(seconds: int) -> str:
    """The time `seconds` from now, e.g. a graceful deletion's deletionTimestamp."""
    return times.rfc3339(time.time() + seconds)
