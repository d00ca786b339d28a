"""Leveled logging for every component, as klog gives Kubernetes': `-v N` verbosity and
`--logging-format=text|json`, on top of the standard library's `logging`.

Guarantees
- `add_flags(parser)` adds `-v`/`--v` (a non-negative integer, default 0) and, unless
  `formats=False`, `--logging-format` (`text`, the default, or `json`) to an argparse
  parser; `setup_from_args(args)` (or `setup(verbosity, fmt)`) configures the root
  logger: one handler on stderr (replacing an earlier one of its own or
  logging.basicConfig's), records above the verbosity dropped.
- Verbosity maps onto logging levels: `V(0)` is INFO and each `V(n)` a level below it,
  so `log.log(V(2), ...)` shows from `-v 2` on. `logging.DEBUG` is `V(4)` (Kubernetes'
  "debug" verbosity); warnings and errors always show. `enabled(n)` says whether V(n)
  records are shown, to skip building an expensive message.
- `info_s(log, n, msg, key=value, ...)` logs a structured record (klog's InfoS): the
  text format renders it `"msg" key="value"`, multi-line values as `key=<` + tab-indented
  lines + ` >`; the JSON format puts the keys beside `msg`.
- Text lines carry klog's header: `I1205 02:39:57.880454   13118 file.py:560] msg`
  (severity I/W/E/F, month and day, local time to the microsecond, pid, caller).
- JSON lines have Kubernetes' JSON logging shape: `{"ts": <unix seconds>, "caller":
  "file.py:NN", "msg": ..., "v": N, <key/values>}`; error records carry no `v` and put
  an exception's text in `err`.
- Libraries that log every request at INFO (httpx, httpcore) are held at WARNING, so
  `-v 0` shows only the component's own lines; asyncio's debug lines are dropped.

Concurrency: logging's own (thread-safe); the verbosity is process-wide, as klog's is.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import IO, Any

from machinery import flags

_LEVELS = (logging.INFO, 18, 16, 13, logging.DEBUG, 9, 8, 7, 6, 5, 4)
FORMATS = flags.LOGGING_FORMATS

_verbosity = 0


def V(n: int) -> int:
    """The logging level of klog's V(n)."""
    if n <= 0:
        return logging.INFO
    if n < len(_LEVELS):
        return _LEVELS[n]
    return max(1, _LEVELS[-1] - (n - len(_LEVELS) + 1))


def verbosity_of(levelno: int) -> int:
    """The V(n) a record's level stands for (0 for INFO and above)."""
    n = 0
    while V(n) > levelno and n < 100:
        n += 1
    return n


def verbosity() -> int:
    return _verbosity


def enabled(n: int) -> bool:
    return n <= _verbosity


add_flags = flags.add_logging_flags


def info_s(logger: logging.Logger, v: int, msg: str, **kv: Any) -> None:
    """A structured V(v) record: `msg` plus key/values."""
    level = V(v)
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"kv": kv}, stacklevel=2)


# -- formatting ----------------------------------------------------------------------------

def _severity(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "F"
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"


def _text_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    if "\n" in s:
        return "<\n" + "".join(f"\t{line}\n" for line in s.splitlines()) + " >"
    return json.dumps(s, ensure_ascii=False) if isinstance(v, str) else s


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        micros = int((record.created - int(record.created)) * 1e6)
        head = (f"{_severity(record.levelno)}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} "
                f"{record.process or os.getpid():7d} {record.filename}:{record.lineno}] ")
        kv = getattr(record, "kv", None)
        msg = record.getMessage()
        if kv:
            msg = json.dumps(msg, ensure_ascii=False) + "".join(
                f" {k}={_text_value(v)}" for k, v in kv.items())
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return head + msg


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": record.created, "caller": f"{record.filename}:{record.lineno}",
                               "msg": record.getMessage()}
        if record.levelno < logging.ERROR:
            out["v"] = verbosity_of(record.levelno)
        for k, v in (getattr(record, "kv", None) or {}).items():
            out.setdefault(k, v)
        if record.exc_info and record.exc_info[1] is not None:
            out["err"] = str(record.exc_info[1]) or type(record.exc_info[1]).__name__
            out["stacktrace"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler[IO[str]]):
    """The handler `setup` installs (and replaces when called again)."""


def setup(verbosity: int = 0, fmt: str = "text", *, stream: IO[str] | None = None) -> None:
    """Configure the root logger: V(verbosity) and more severe, to `stream` (stderr)."""
    global _verbosity
    if fmt not in FORMATS:
        raise ValueError(f"unknown logging format {fmt!r} (want text or json)")
    _verbosity = max(0, verbosity)
    root = logging.getLogger()
    # Ours from an earlier call, and logging.basicConfig's (`minik8s COMPONENT` sets one
    # up before the component parses its flags); other handlers (a test's capture) stay.
    for h in [h for h in root.handlers if isinstance(h, _Handler) or type(h) is logging.StreamHandler]:
        root.removeHandler(h)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(V(_verbosity))
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.INFO)  # its debug lines ("Using selector") say nothing


def setup_from_args(args: argparse.Namespace, *, stream: IO[str] | None = None) -> None:
    setup(getattr(args, "v", 0) or 0, getattr(args, "logging_format", "text") or "text", stream=stream)
