"""The Clock: wall and monotonic readings, sleeping and timers, real and fake."""
import asyncio
import time

from client.clock import Clock, FakeClock, RealClock


async def test_real_clock_reads_the_wall_and_the_loop():
    clock: Clock = RealClock()
    assert abs(clock.now() - time.time()) < 60, "wall time is seconds since the epoch"
    before = clock.monotonic()
    assert before <= asyncio.get_running_loop().time()
    fired = asyncio.Event()
    clock.call_later(0, fired.set)
    await asyncio.wait_for(fired.wait(), 10)
    await clock.sleep(-1)  # a negative delay does not wait
    assert clock.monotonic() >= before


async def test_fake_clock_moves_only_when_stepped():
    clock: Clock = FakeClock(100.0, wall=1_700_000_000.0)
    assert (clock.monotonic(), clock.now()) == (100.0, 1_700_000_000.0)
    order = []
    clock.call_later(5, lambda: order.append(("t5", clock.monotonic())))
    cancelled = clock.call_later(1, lambda: order.append("never"))
    sleeper = asyncio.create_task(clock.sleep(3))
    await asyncio.sleep(0)  # let the sleeper register its timer
    assert clock.pending == 3
    cancelled.cancel()
    clock.step(4)
    await asyncio.wait_for(sleeper, 10)
    assert order == [] and clock.monotonic() == 104.0 and clock.now() == 1_700_000_004.0
    clock.step(10)
    assert order == [("t5", 105.0)], "a timer sees its own deadline as the time"
    assert clock.pending == 0


def test_fake_clock_without_wall_reads_start_for_both():
    clock = FakeClock(7.0)
    clock.step(1.5)
    assert clock.now() == clock.monotonic() == 8.5
