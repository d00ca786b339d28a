"""Timestamps as the API writes them: RFC 3339 in UTC, whole seconds (metav1.Time)."""
from __future__ import annotations

import datetime as dt
import functools
import time


def now() -> str:
    return _rfc3339(int(time.time()))


@functools.lru_cache(maxsize=2)  # formatted once a second, not once per write
def _rfc3339(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def later(seconds: int) -> str:
    """The time `seconds` from now, e.g. a graceful deletion's deletionTimestamp."""
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
