"""Flag values the components read as Kubernetes' binaries do (argparse `type=`s).

Pure: no I/O, no state.
"""
import argparse
from typing import Any


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
    from machinery.duration import parse_duration  # here: a CLI that takes only -v skips it
    try:
        seconds = parse_duration(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {v!r}: negative")
    return seconds


def verbosity(v: str) -> int:
    """`-v 4`: klog's verbosity, a number from 0 up."""
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid verbosity {v!r}: want a number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid verbosity {v!r}: want 0 or more")
    return n


LOGGING_FORMATS = ("text", "json")


def add_logging_flags(parser: argparse.ArgumentParser | Any, *, formats: bool = True) -> None:
    """klog's `-v`/`--v` and component-base's `--logging-format` (machinery.klog reads
    them). Here, not in klog, so that a CLI can take `-v` without importing logging."""
    parser.add_argument("-v", "--v", dest="v", type=verbosity, default=0, metavar="N",
                        help="number for the log level verbosity")
    if formats:
        parser.add_argument("--logging-format", choices=LOGGING_FORMATS, default="text",
                            help="log format: text (klog's) or json")
