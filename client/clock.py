"""The Clock: the one seam through which minik8s code reads time, waits and sets timers.

The API (all of it):
- `now()`: wall-clock time, seconds since the Unix epoch (what `time.time()` reads).
  Use it for what is written into objects or compared with timestamps read from
  them (an Event's `lastTimestamp`, a Lease's `renewTime`). It can jump (NTP, an
  operator setting the date).
- `monotonic()`: seconds on a clock that never goes back, with an arbitrary origin.
  Use it for every interval and deadline measured locally (timeouts, backoff, "how
  long since I last saw this"): a wall-clock jump does not stretch or shorten them.
- `sleep(seconds)`: wait that long on the monotonic clock (a negative delay is 0).
- `call_later(delay, callback)`: run `callback` once, `delay` monotonic seconds from
  now, unless the returned `Timer` is cancelled first.

`RealClock` reads `time.time()` and the event loop's monotonic clock. `FakeClock` only
moves when a test calls `step()`: both of its readings advance together, due timers
fire and sleepers wake in deadline order, so timing logic (delays, backoff, token
buckets, lease expiry) is tested without sleeping. Pass a clock in (`clock=`) rather
than reading a global one.

Concurrency: both are used from one asyncio loop; neither is thread-safe.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable, Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class RealClock:
    """The machine's clocks: `monotonic()` reads the running loop's clock (time.monotonic()
    with none running); timers need a running event loop."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:  # no loop yet (a queue filled in a constructor): asyncio's clock
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


class _FakeTimer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that stands still until `step()`. `start` is both readings' value at
    creation unless `wall` gives the wall clock its own (e.g. a fixed date)."""

    def __init__(self, start: float = 0.0, *, wall: float | None = None):
        self._mono = start
        self._wall_offset = (start if wall is None else wall) - start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._mono + self._wall_offset

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer(self._mono + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)
        timer = self.call_later(seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def step(self, seconds: float) -> None:
        """Advance time by `seconds`, firing every timer that falls due, in order, with
        the clock reading each timer's own deadline while it runs."""
        end = self._mono + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._mono = max(self._mono, when)
                timer.callback()
        self._mono = end

    @property
    def pending(self) -> int:
        """Timers not yet fired or cancelled (lets a test see that something waits)."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)
