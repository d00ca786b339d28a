"""The work queue's client-go contract, driven by a fake clock (no sleeping)."""
import asyncio
import random

import pytest

from client.clock import FakeClock
from client.workqueue import (ExponentialBackoff, MaxOf, RateLimitingQueue, ShutDown, TokenBucket,
                              WorkQueue, default_rate_limiter)


async def get_now(q: WorkQueue, timeout: float = 2.0):
    return await asyncio.wait_for(q.get(), timeout)


async def test_repeated_adds_collapse_into_one():
    q = WorkQueue()
    for key in ("a", "a", "b", "a", "b"):
        q.add(key)
    assert len(q) == 2
    assert [await get_now(q), await get_now(q)] == ["a", "b"]
    assert len(q) == 0


async def test_key_readded_while_processing_is_processed_again_after_done():
    q = WorkQueue()
    q.add("a")
    assert await get_now(q) == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a key being processed must not be handed out again"
    q.done("a")
    assert len(q) == 1
    assert await get_now(q) == "a"
    q.done("a")
    assert len(q) == 0


async def test_no_key_is_processed_by_two_workers_and_no_add_is_lost():
    q = WorkQueue()
    keys = [f"k{i}" for i in range(5)]
    in_flight = {k: 0 for k in keys}
    generation = {k: 0 for k in keys}     # bumped by every add
    processed_gen = {k: -1 for k in keys}  # generation seen when processing last started
    overlaps = []
    rng = random.Random(7)

    async def worker():
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            in_flight[key] += 1
            if in_flight[key] > 1:
                overlaps.append(key)
            processed_gen[key] = generation[key]
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            in_flight[key] -= 1
            q.done(key)

    async def producer():
        for _ in range(2000):
            key = rng.choice(keys)
            generation[key] += 1
            q.add(key)
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(20)]
    await asyncio.gather(*(producer() for _ in range(4)))
    await asyncio.wait_for(q.shutdown_with_drain(), 10)
    await asyncio.wait_for(asyncio.gather(*workers), 10)
    assert overlaps == []
    # Every key was processed after its last add: nothing added was missed.
    assert processed_gen == generation


async def test_add_after_waits_on_the_clock_and_the_earliest_delay_wins():
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 5.0)
    q.add_after("b", 10.0)
    q.add_after("b", 2.0)   # earlier: wins
    q.add_after("a", 50.0)  # later: ignored
    assert len(q) == 0
    clock.step(1.9)
    assert len(q) == 0
    clock.step(0.1)
    assert len(q) == 1 and await get_now(q) == "b"
    clock.step(2.9)
    assert len(q) == 0
    clock.step(0.1)
    assert await get_now(q) == "a"
    q.done("a")
    q.done("b")
    clock.step(100)
    assert len(q) == 0, "superseded timers must not fire"
    q.add_after("c", 0)
    assert len(q) == 1


async def test_per_key_backoff_doubles_to_its_cap_and_forget_resets_it():
    limiter = ExponentialBackoff(0.005, 1000.0)
    delays = [limiter.when("k") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0 and max(delays) == 1000.0
    assert limiter.num_requeues("k") == 20
    assert limiter.when("other") == 0.005, "backoff is per key"
    limiter.forget("k")
    assert limiter.num_requeues("k") == 0
    assert limiter.when("k") == 0.005


async def test_token_bucket_allows_a_burst_then_paces_at_qps():
    clock = FakeClock()
    bucket = TokenBucket(10, 100, clock=clock)
    assert all(bucket.when(i) == 0 for i in range(100))
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.step(1.0)  # ten tokens come back; two were already owed
    assert all(bucket.when(i) == 0 for i in range(8))
    assert bucket.when("z") == pytest.approx(0.1)


async def test_rate_limited_requeue_uses_backoff_on_the_clock_and_forget():
    clock = FakeClock()
    q = RateLimitingQueue(MaxOf(ExponentialBackoff(0.005, 1000.0)), clock=clock)
    expected = 0.005
    for attempt in range(6):
        q.add_rate_limited("k")
        clock.step(expected * 0.99)
        assert len(q) == 0, f"attempt {attempt} came back before its backoff"
        clock.step(expected * 0.02)
        assert await get_now(q) == "k"
        q.done("k")
        expected *= 2
    assert q.num_requeues("k") == 6
    q.forget("k")
    assert q.num_requeues("k") == 0
    q.add_rate_limited("k")
    clock.step(0.005)
    assert len(q) == 1


async def test_default_rate_limiter_is_the_max_of_backoff_and_bucket():
    clock = FakeClock()
    limiter = default_rate_limiter(clock=clock)
    assert limiter.when("a") == 0.005
    for i in range(99):
        limiter.when(f"x{i}")
    assert limiter.when("b") == pytest.approx(0.1), "the bucket (burst 100) now dominates"


async def test_shutdown_with_drain_finishes_queued_and_in_flight_work():
    q = WorkQueue()
    q.add("a")
    q.add("b")
    assert await get_now(q) == "a"
    drain = asyncio.create_task(q.shutdown_with_drain())
    await asyncio.sleep(0)
    q.add("c")  # ignored: shutting down
    q.add_after("d", 0.01)
    assert not drain.done()
    assert await get_now(q) == "b", "keys queued before shutdown are still handed out"
    q.done("a")
    await asyncio.sleep(0)
    assert not drain.done(), "b is still being processed"
    q.done("b")
    await asyncio.wait_for(drain, 2)
    with pytest.raises(ShutDown):
        await get_now(q)


async def test_shutdown_wakes_idle_workers():
    q = WorkQueue()
    waiters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 2)
    assert all(isinstance(r, ShutDown) for r in results)


async def test_serve_marks_each_key_done_even_when_handling_fails_and_stops_at_shutdown():
    q = WorkQueue()
    seen = []

    async def handle(key):
        seen.append(key)
        if key == "bad":
            raise ValueError(key)
        if key == "last":
            q.shutdown()

    for key in ("a", "last"):
        q.add(key)
    await asyncio.wait_for(q.serve(handle), 2)  # returns at shutdown
    assert seen == ["a", "last"] and len(q) == 0
    q = WorkQueue()
    q.add("bad")
    with pytest.raises(ValueError):
        await asyncio.wait_for(q.serve(handle), 2)
    q.add("bad")  # it was marked done, so it is queued again, not held as processing
    assert await get_now(q) == "bad"
