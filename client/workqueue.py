"""Work queues with client-go's contract (k8s.io/client-go/util/workqueue).

`WorkQueue` guarantees, for any hashable key:
- a key is never handed to two workers at once: between `get()` returning it and
  `done(key)`, further `add(key)` calls only mark it dirty;
- adds of a key that is already queued collapse into one;
- a key added while it is being processed is queued again when `done(key)` is called,
  so the change that caused the add is never missed;
- keys are handed out in the order they were (first) queued;
- `add_after(key, delay)` queues the key once the delay passes on the injected clock;
  of several pending delays for one key the earliest wins;
- after `shutdown()` adds are ignored, but keys already queued are still handed out;
  `get()` raises `ShutDown` once the queue is empty. `shutdown_with_drain()` also waits
  until every handed-out key is `done` and nothing is queued (workers must still run).

`RateLimitingQueue` adds `add_rate_limited` (delay chosen by a rate limiter: by default
the larger of a per-key exponential backoff, 5ms doubling to 1000s, and an overall
token bucket of 10 qps with a burst of 100, as client-go's default controller limiter),
`forget` (reset a key's backoff after success) and `num_requeues`.

Metrics: a named queue reports client-go's workqueue metrics (client.metrics: adds,
depth, queue and work durations, retries, unfinished work) on its clock; an unnamed one
reports none.

Concurrency: all methods run on one asyncio loop; every mutation is a synchronous
step with no await inside, so concurrent worker tasks cannot interleave within one.
Fairness: a `serve` worker yields the loop after every key, so a queue that never
empties cannot keep the loop's other tasks from running.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Awaitable, Callable, Hashable, Protocol

from client.clock import Clock, RealClock, Timer
from client.metrics import QueueMetrics


class ShutDown(Exception):
    """The queue is shut down and has nothing left to hand out."""


class WorkQueue:
    def __init__(self, *, clock: Clock | None = None, name: str = ""):
        self.name = name
        self.clock = clock or RealClock()
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()         # needs processing (queued, or re-added while processing)
        self._processing: set[Hashable] = set()    # handed out, not yet done
        self._waiting: dict[Hashable, tuple[float, Timer]] = {}  # add_after timers
        self._shutting_down = False
        self._wakeup = asyncio.Event()   # set whenever the queue gains an item or shuts down
        self._idle = asyncio.Event()     # set when nothing is queued or processing
        self._metrics = QueueMetrics(name, self.clock.monotonic) if name else None

    def add(self, key: Hashable) -> None:
        if self._shutting_down or key in self._dirty:
            return
        if self._metrics is not None:  # first: nothing is half-done if it fails
            self._metrics.add(key)
        self._dirty.add(key)
        if key in self._processing:
            return  # `done` queues it again
        self._queue.append(key)
        self._idle.clear()
        self._wakeup.set()

    async def get(self) -> Hashable:
        # Every waiter wakes on each add and re-checks; the loser waits again. Simple, and
        # correct under cancellation (no wakeup is handed to a task that went away).
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        if self._metrics is not None:
            self._metrics.get(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if self._metrics is not None:
            self._metrics.done(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wakeup.set()
        elif not self._queue and not self._processing:
            self._idle.set()

    async def serve(self, handle: Callable[[Hashable], Awaitable[None]]) -> None:
        """One worker: hand each key to `handle` until the queue shuts down, marking it
        done afterwards whatever `handle` raises (an exception ends this worker).

        The worker hands the loop back after every key. `get` on a non-empty queue and a
        `handle` that decides from caches alone never suspend, so without it one worker
        with a full queue would run key after key and no other task on the loop (another
        controller's workers, the informers feeding them) would run until that queue was
        empty: the ReplicaSet controller starved behind the node lifecycle controller's
        lease events (issue 20). Goroutines are preempted; a task must yield. One yield
        costs a loop iteration, microseconds against any reconcile."""
        while True:
            try:
                key = await self.get()
            except ShutDown:
                return
            try:
                await handle(key)
            finally:
                self.done(key)
            await asyncio.sleep(0)

    def add_after(self, key: Hashable, delay: float) -> None:
        if self._shutting_down:
            return
        if self._metrics is not None:
            self._metrics.retry()
        if delay <= 0:
            self.add(key)
            return
        when = self.clock.monotonic() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._waiting[key] = (when, self.clock.call_later(delay, lambda: self._fire(key)))

    def _fire(self, key: Hashable) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        """Keys queued and not yet handed out (neither processing nor delayed)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._wakeup.set()
        if not self._queue and not self._processing:
            self._idle.set()

    async def shutdown_with_drain(self) -> None:
        self.shutdown()
        await self._idle.wait()


class RateLimiter(Protocol):
    def when(self, key: Hashable) -> float: ...
    def forget(self, key: Hashable) -> None: ...
    def num_requeues(self, key: Hashable) -> int: ...


class ExponentialBackoff:
    """Per-key failure backoff: base * 2**failures, capped (ItemExponentialFailureRateLimiter)."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0):
        self.base, self.cap = base, cap
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        # Past 2**64 the product overflows nothing in Python but means nothing either.
        return min(self.base * 2.0 ** min(n, 64), self.cap)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class TokenBucket:
    """An overall rate limit with golang.org/x/time/rate's reservation semantics: each
    `when` takes a token now and answers how long until that token exists."""

    def __init__(self, qps: float = 10.0, burst: int = 100, *, clock: Clock | None = None):
        self.qps, self.burst = qps, burst
        self.clock = clock or RealClock()
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, key: Hashable) -> float:
        now = self.clock.monotonic()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: Hashable) -> None:
        pass

    def num_requeues(self, key: Hashable) -> int:
        return 0


class MaxOf:
    """The longest delay any of the limiters asks for."""

    def __init__(self, *limiters: RateLimiter):
        self.limiters = limiters

    def when(self, key: Hashable) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_rate_limiter(*, clock: Clock | None = None) -> RateLimiter:
    """client-go's DefaultControllerRateLimiter."""
    return MaxOf(ExponentialBackoff(0.005, 1000.0), TokenBucket(10.0, 100, clock=clock))


class RateLimitingQueue(WorkQueue):
    def __init__(self, rate_limiter: RateLimiter | None = None, *, clock: Clock | None = None,
                 name: str = ""):
        super().__init__(clock=clock, name=name)
        self.rate_limiter = rate_limiter or default_rate_limiter(clock=self.clock)

    def add_rate_limited(self, key: Hashable) -> None:
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: Hashable) -> None:
        self.rate_limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return self.rate_limiter.num_requeues(key)
