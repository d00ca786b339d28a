"""Leader election on Lease objects against a real API server, with short durations
(lease 1s, renew deadline 0.7s, retry 0.2s). A trace of start/stop callbacks, all on
one clock, must never show two leaders at once. How soon a successor takes over is
judged from the Lease's own times (no earlier than the lease allows, or, after a
release, long before it would have expired), never by a stopwatch: a busy machine
only makes the waits longer."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from client.leaderelection import LeaderElector
from client.rest import Client
from machinery import times

LEASE, DEADLINE, RETRY = 1.0, 0.7, 0.2


class Trace:
    def __init__(self):
        self.events: list[tuple[float, str, str]] = []

    def candidate(self, client, identity, ns, **kw) -> LeaderElector:
        async def lead():
            self.events.append((time.monotonic(), identity, "start"))
            await asyncio.Event().wait()  # act until cancelled
        return LeaderElector(client, name="lock", namespace=ns, identity=identity,
                             on_started_leading=lead,
                             on_stopped_leading=lambda: self.events.append((time.monotonic(), identity, "stop")),
                             **{"lease_duration": LEASE, "renew_deadline": DEADLINE, "retry_period": RETRY, **kw})

    def leaders_over_time(self) -> list[str]:
        """The sequence of leaders; fails if two ever overlap."""
        active: set[str] = set()
        order = []
        for _, who, what in self.events:
            if what == "start":
                assert not active, f"{who} started leading while {active} still led"
                active.add(who)
                order.append(who)
            else:
                active.discard(who)
        return order

    def started(self, who) -> float | None:
        return next((t for t, w, what in self.events if w == who and what == "start"), None)


async def eventually(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def lease_spec(client, ns) -> dict:
    return (await client.get("leases", "lock", namespace=ns))["spec"]


def expired_by(when: str, held: dict) -> bool:
    """Whether the Lease `held` had expired at `when` (its renewTime + its duration)."""
    return times.parse(when) >= times.parse(held["renewTime"]) + held["leaseDurationSeconds"]


@pytest.fixture
async def client(apiserver):
    async with Client(apiserver.connection()) as c:
        yield c


async def test_exactly_one_of_two_leads_and_the_other_takes_over(client, ns):
    trace = Trace()
    a, b = trace.candidate(client, "a", ns), trace.candidate(client, "b", ns)
    tasks = {"a": asyncio.create_task(a.run()), "b": asyncio.create_task(b.run())}
    try:
        await eventually(lambda: trace.events, what="a leader")
        first, second = (a, b) if a.is_leader() else (b, a)
        for _ in range(40):  # 2s, ten renewals: the follower never leads meanwhile
            assert first.is_leader() and not second.is_leader()
            await asyncio.sleep(0.05)
        spec = await lease_spec(client, ns)
        assert spec["holderIdentity"] == first.identity and spec["leaseDurationSeconds"] == 1
        assert spec["leaseTransitions"] == 0
        assert spec["renewTime"] > spec["acquireTime"]  # renewed since it was acquired

        tasks[first.identity].cancel()  # its renewals stop; no release
        await asyncio.gather(tasks[first.identity], return_exceptions=True)
        last = await lease_spec(client, ns)
        await eventually(lambda: trace.started(second.identity), timeout=30, what="takeover")
        assert trace.leaders_over_time() == [first.identity, second.identity]
        spec = await lease_spec(client, ns)
        assert spec["holderIdentity"] == second.identity and spec["leaseTransitions"] == 1
        assert expired_by(spec["acquireTime"], last)  # it waited the lease out
    finally:
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


class Partition(httpx.AsyncBaseTransport):
    """A real transport that, once cut, swallows requests without answer."""

    def __init__(self, verify):
        self.inner = httpx.AsyncHTTPTransport(verify=verify)
        self.cut = False

    async def handle_async_request(self, request):
        if self.cut:
            await asyncio.Event().wait()
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


async def test_a_leader_that_cannot_renew_stops_before_anyone_else_starts(apiserver, client, ns):
    trace = Trace()
    partition = Partition(apiserver.admin_tls())
    async with Client(apiserver.connection(), transport=partition) as cut_off:
        a = trace.candidate(cut_off, "a", ns)
        run_a = asyncio.create_task(a.run())
        await eventually(lambda: trace.started("a"), what="a leads")
        b = trace.candidate(client, "b", ns)
        run_b = asyncio.create_task(b.run())
        try:
            await asyncio.sleep(3 * RETRY)  # b has now observed a's renewals
            partition.cut = True
            await asyncio.wait_for(run_a, 30)  # run() returns: leadership lost
            stop_a = next(t for t, w, what in trace.events if w == "a" and what == "stop")
            await eventually(lambda: trace.started("b"), timeout=30, what="b takes over")
            assert trace.leaders_over_time() == ["a", "b"]
            assert trace.started("b") > stop_a
        finally:
            run_a.cancel()
            run_b.cancel()
            await asyncio.gather(run_a, run_b, return_exceptions=True)


class SlowReads(httpx.AsyncBaseTransport):
    """A real transport that, once `hold_until` is set, answers no GET before then."""

    def __init__(self, verify):
        self.inner = httpx.AsyncHTTPTransport(verify=verify)
        self.hold_until: float | None = None

    async def handle_async_request(self, request):
        if self.hold_until is not None and request.method == "GET":
            await asyncio.sleep(max(0.0, self.hold_until - time.monotonic()))
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


async def test_a_takeover_is_judged_at_the_time_written_as_acquire_time(apiserver, client, ns):
    # Found through the fault proxy (tests/chaos/test_leader_election_flaky.py): a
    # follower whose read of the Lease was slow judged it expired by the clock after the
    # read but wrote the time before it as acquireTime, so the Lease showed a takeover
    # less than leaseDurationSeconds after the old holder's last renewTime. client-go
    # judges and stamps with one `now`, taken when the attempt starts.
    trace = Trace()
    slow = SlowReads(apiserver.admin_tls())
    async with Client(apiserver.connection(), transport=slow) as slow_client:
        a = trace.candidate(client, "a", ns)
        run_a = asyncio.create_task(a.run())
        await eventually(lambda: trace.started("a"), what="a leads")
        b = trace.candidate(slow_client, "b", ns)
        run_b = asyncio.create_task(b.run())
        try:
            await eventually(lambda: b.leader == "a", what="b follows a")
            # b's reads from now on answer only once a's lease has run out, well after
            # the attempt that sent them began
            slow.hold_until = time.monotonic() + LEASE + 0.3
            run_a.cancel()  # a stops renewing, without a release
            await asyncio.gather(run_a, return_exceptions=True)
            last = await lease_spec(client, ns)
            await eventually(lambda: trace.started("b"), timeout=5, what="b takes over")
            spec = await lease_spec(client, ns)
            assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == last["leaseTransitions"] + 1
            gap = times.parse(spec["acquireTime"]) - times.parse(last["renewTime"])
            assert gap >= last["leaseDurationSeconds"], (last, spec)
        finally:
            run_b.cancel()
            await asyncio.gather(run_b, return_exceptions=True)


async def test_release_on_cancel_hands_over_without_waiting_for_expiry(client, ns):
    # A long lease, so that taking over before it would have expired can only be the release.
    durations = {"lease_duration": 60.0, "renew_deadline": 40.0}
    trace = Trace()
    a = trace.candidate(client, "a", ns, release_on_cancel=True, **durations)
    run_a = asyncio.create_task(a.run())
    await eventually(lambda: trace.started("a"), what="a leads")
    b = trace.candidate(client, "b", ns, **durations)
    run_b = asyncio.create_task(b.run())
    try:
        await eventually(lambda: b.leader == "a", what="b follows a")  # b is waiting out a's lease
        held = await lease_spec(client, ns)
        run_a.cancel()
        await asyncio.gather(run_a, return_exceptions=True)
        assert (await lease_spec(client, ns))["holderIdentity"] == ""
        await eventually(lambda: trace.started("b"), timeout=30, what="b takes over")
        assert not expired_by((await lease_spec(client, ns))["acquireTime"], held)  # no lease-duration wait
        assert trace.leaders_over_time() == ["a", "b"]
    finally:
        run_b.cancel()
        await asyncio.gather(run_b, return_exceptions=True)


CANDIDATE = textwrap.dedent("""
    import asyncio, sys
    from client.kubeconfig import load
    from client.leaderelection import LeaderElector
    from client.rest import Client

    async def main(kubeconfig, ns):
        async with Client(load(kubeconfig).connection()) as c:
            async def lead():
                print("LEADING", flush=True)
                await asyncio.Event().wait()
            await LeaderElector(c, name="lock", namespace=ns, identity="proc",
                                on_started_leading=lead, lease_duration=1.0,
                                renew_deadline=0.7, retry_period=0.2).run()
    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


async def test_killing_the_leaders_process_hands_over_once_the_lease_expires(kubeconfig, client, ns):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", CANDIDATE, kubeconfig, ns], cwd=root,
                            stdout=subprocess.PIPE)
    trace = Trace()
    run_b = None
    try:
        assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20) == b"LEADING\n"
        b = trace.candidate(client, "b", ns)
        run_b = asyncio.create_task(b.run())
        await asyncio.sleep(1.5 * LEASE)  # the process keeps renewing: b stays a follower
        assert not b.is_leader()
        assert (await lease_spec(client, ns))["holderIdentity"] == "proc"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        last = await lease_spec(client, ns)
        await eventually(lambda: trace.started("b"), timeout=30, what="b takes over")
        spec = await lease_spec(client, ns)
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
        assert expired_by(spec["acquireTime"], last)
    finally:
        proc.kill()
        proc.wait()
        if run_b is not None:
            run_b.cancel()
            await asyncio.gather(run_b, return_exceptions=True)


def test_durations_must_leave_room_for_a_safe_handover():
    with pytest.raises(ValueError):
        LeaderElector(None, name="l", namespace="n", identity="i", on_started_leading=None,
                      lease_duration=1.0, renew_deadline=1.0, retry_period=0.2)
