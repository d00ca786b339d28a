"""The crash back-off of restarting containers (client-go util/flowcontrol.Backoff, as the
kubelet uses it in kuberuntime_manager.doBackOff).

Per key (pod uid + container name): the first restart after an exit is immediate and
arms a 10 s back-off; each later exit within the back-off window waits it out and then
doubles it, up to 5 minutes. An entry not renewed for `reset` seconds (10 minutes: the
container ran that long without crashing) starts over. Times are read from an injectable
clock (`now()` in seconds), so tests step through minutes of back-off without sleeping.
Not thread-safe: one event loop uses it.
"""
from __future__ import annotations

from typing import Callable


class Backoff:
    def __init__(self, now: Callable[[], float], *, initial: float = 10.0, maximum: float = 300.0,
                 reset: float = 600.0):
        self.now, self.initial, self.maximum, self.reset = now, initial, maximum, reset
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last update)

    def remaining(self, key: str, since: float) -> float:
        """Seconds left before a container that exited at `since` may restart (0: now)."""
        entry = self._entries.get(key)
        if entry is None or self.now() - entry[1] > self.reset:
            return 0.0
        return max(0.0, since + entry[0] - self.now())

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def next(self, key: str, at: float) -> None:
        """Record a restart of a container that exited at `at`: arm or double the delay."""
        entry = self._entries.get(key)
        if entry is None or at - entry[1] > self.reset:
            delay = self.initial
        else:
            delay = min(entry[0] * 2, self.maximum)
        self._entries[key] = (delay, at)

    def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]
