"""Benchmarks: `python -m bench.<name>` prints figures (see README, Performance).

A benchmark stopped by SIGTERM (`timeout`, a closed terminal's supervisor) unwinds like
one stopped by Ctrl-C, so its `finally` blocks stop the etcd and servers it started.
"""
import signal
import sys

signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
