"""Kubernetes' two time formats, written and read in one place.

`metav1.Time` is RFC 3339 in UTC with whole seconds (`2026-12-05T02:32:38Z`): creation
and deletion timestamps, conditions' transition times, most status times.
`metav1.MicroTime` keeps microseconds (`2026-12-05T02:32:38.123456Z`): Lease renew and
acquire times, events.k8s.io event times.

Writers take seconds since the epoch (`time.time()`, or a clock's `now()`); none given
means now. `parse` reads either format, and any RFC 3339 offset, back into seconds
since the epoch, so callers compare plain floats.
"""
from __future__ import annotations

import datetime as dt
import time


def rfc3339(t: float | None = None) -> str:
    """`metav1.Time`: whole seconds (truncated, as Go's time.Truncate(time.Second))."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def rfc3339_micro(t: float | None = None) -> str:
    """`metav1.MicroTime`: six fractional digits, always written."""
    whole, micros = divmod(round((time.time() if t is None else t) * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def parse(value: str) -> float:
    """RFC 3339 (`Z` or an offset, any fraction) -> seconds since the epoch.

    Raises ValueError for anything else, so a caller reading a user's object can
    report it rather than guess. (datetime.fromisoformat, in C, takes Go's nine
    fractional digits and `Z` since Python 3.11: ~0.2 us, where strptime took ~5.)
    """
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt":
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    parsed = dt.datetime.fromisoformat(value.upper() if value[10] == "t" or value[-1] == "z" else value)
    if parsed.tzinfo is None:
        raise ValueError(f"not an RFC 3339 time (no offset): {value!r}")
    return parsed.timestamp()
