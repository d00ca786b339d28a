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

import calendar
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
    report it rather than guess.
    """
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt":
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    if value[-1] in "Zz" and len(value) == 20:  # the common case, without datetime
        return float(calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")))
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    head, dot, rest = text.partition(".")
    if dot:  # Python reads at most six fractional digits; Go writes up to nine
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[:min(digits, 6)] + rest[digits:]
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"not an RFC 3339 time (no offset): {value!r}")
    return parsed.timestamp()
