"""Durations: read as Go's time.ParseDuration reads them (every flag and config field
that takes one), printed as Kubernetes prints ages (util/duration.HumanDuration), and as
Go's time.Duration.String() writes them (`metav1.Duration` fields, kubectl's messages).

Pure: no I/O, no state.
"""
import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`15s`, `1m30s`, `250ms`, `-2s`), or in a plain number,
    read as seconds (as `kubectl --timeout=30` is); ValueError naming the text otherwise."""
    t = text.strip()
    try:
        seconds = float(t)
    except ValueError:
        sign, body = (-1.0, t[1:]) if t[:1] == "-" else (1.0, t[1:] if t[:1] == "+" else t)
        pos, seconds = 0, 0.0
        for m in _TERM.finditer(body):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if not body or pos != len(body):
            raise ValueError(f"invalid duration {text!r} (e.g. 15s, 1m30s, 250ms)") from None
        seconds *= sign
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r} (e.g. 15s, 1m30s, 250ms)")
    return seconds


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration: 5s, 3m20s, 2d4h, 3y..."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if d < 365 * 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


_GO_UNITS = (("h", 3600 * 10**9), ("m", 60 * 10**9))


def go_string(seconds: float) -> str:
    """Go's time.Duration.String() of `seconds` (to the nanosecond): `15.002s`,
    `1m0.5s`, `1h2m5.1s`, `250ms`, `1.5µs`, `0s`."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
        return f"{sign}{ns}ns"
    out = ""
    for unit, size in _GO_UNITS:
        if ns >= size or out:
            out += f"{ns // size}{unit}"
            ns %= size
    return sign + out + _fraction(ns, 10**9) + "s"


def _fraction(value: int, size: int) -> str:
    whole, rest = divmod(value, size)
    if not rest:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}." + f"{rest:0{digits}d}".rstrip("0")
