"""Flag values the components read as Kubernetes' binaries do (argparse `type=`s).

Pure: no I/O, no state.
"""
import argparse

from machinery.duration import parse_duration


def boolean(v: str) -> bool:
    """`--leader-elect=false`: true/false, 1/0, t/f, yes/no, in any case."""
    v = v.strip().lower()
    if v in ("true", "1", "yes", "t"):
        return True
    if v in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def duration(v: str) -> float:
    """`--node-monitor-grace-period=40s`: a Go duration (or plain seconds), never negative."""
    try:
        seconds = parse_duration(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {v!r}: negative")
    return seconds
