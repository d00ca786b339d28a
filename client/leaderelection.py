"""Leader election on coordination.k8s.io/v1 Lease objects (client-go tools/leaderelection).

Guarantees (given lease_duration > renew_deadline, as the constructor checks):
- At most one candidate acts as leader at a time. A candidate takes the Lease only if
  it is free or its holder has not renewed it for `leaseDurationSeconds`, measured on
  the candidate's own monotonic clock from when it last saw the record change (so
  clocks on different hosts never need to agree), judged at the start of the attempt,
  whose wall time it writes as acquireTime: a Lease's acquireTime is never less than
  leaseDurationSeconds after the previous holder's last renewTime; every write is a compare-and-swap on
  resourceVersion, so of two candidates racing for one Lease the loser gets 409 and
  stays a follower.
- The leader renews every `retry_period`. If it has not renewed within
  `renew_deadline` of the start of its last successful renewal (or it sees another
  holder), it stops acting at once: the `on_started_leading` task is cancelled and
  awaited, then `on_stopped_leading` is called. Since renew_deadline < lease_duration,
  it has stopped before any other candidate may consider the Lease expired.
- `spec.leaseTransitions` counts changes of holder; `acquireTime` is when the current
  holder took the Lease and `renewTime` its last renewal (RFC 3339 micro time).
- `run()` returns once leadership is lost (as client-go's Run does; most components
  then exit and are restarted). `lost` is True from the moment the lease is lost,
  before the leading task is cancelled, so that task can tell a lost lease (drop the
  writes in flight: a successor may soon act) from a cancel (let them land, then
  release). Cancelling `run()` stops leading the same way and, with
  `release_on_cancel`, clears the holder so a successor need not wait for expiry.

Concurrency: `run()` is one task; the leading work is a separate task it owns.
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Any, Callable, Coroutine

from client.clock import Clock, RealClock
from client.rest import Client
from machinery import times
from machinery.errors import AlreadyExists, Conflict, NotFound

log = logging.getLogger("minik8s.client.leaderelection")

JITTER = 1.2  # client-go's JitterFactor: followers retry every retry_period * [1, 1.2)


def micro_time(t: float) -> str:
    """A MicroTime (RFC 3339 with microseconds, UTC) for `t` seconds since the epoch."""
    return times.rfc3339_micro(t)


class LeaderElector:
    def __init__(self, client: Client, *, name: str, namespace: str, identity: str,
                 on_started_leading: Callable[[], Coroutine[Any, Any, None]],
                 on_stopped_leading: Callable[[], None] | None = None,
                 on_new_leader: Callable[[str], None] | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, release_on_cancel: bool = False,
                 clock: Clock | None = None):
        if not lease_duration > renew_deadline > retry_period * JITTER:
            raise ValueError("need lease_duration > renew_deadline > retry_period * 1.2")
        self.client = client
        self.name, self.namespace, self.identity = name, namespace, identity
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration, renew_deadline, retry_period)
        self.release_on_cancel = release_on_cancel
        self.clock = clock or RealClock()
        self.leader = ""                    # the holder as last observed
        self._lease: dict[str, Any] | None = None     # the Lease as last read or written
        self._observed_at = 0.0             # our clock when the record last changed
        self._renewed_at = 0.0              # our clock at the start of the last renewal
        self._leading = False
        self.lost = False                   # run() ended because the lease was lost

    def is_leader(self) -> bool:
        return self._leading

    def check(self, max_tolerable_expired_lease: float) -> None:
        """Raise if this process leads but has not renewed for longer than the lease
        duration plus `max_tolerable_expired_lease` (a stuck leader: client-go's
        LeaderElector.Check, behind the `leaderElection` health check)."""
        stale = self.clock.monotonic() - self._observed_at
        if self._leading and stale > self.lease_duration + max_tolerable_expired_lease:
            raise RuntimeError(f"failed election to renew leadership on lease {self.name}")

    async def run(self) -> None:
        while not await self._try_acquire_or_renew():
            await self.clock.sleep(self.retry_period * random.uniform(1.0, JITTER))
        log.info("%s: became leader of lease %s/%s", self.identity, self.namespace, self.name)
        self._leading = True
        task = asyncio.create_task(self.on_started_leading(), name=f"leading-{self.identity}")
        cancelled = False
        try:
            await self._renew_until_lost()
            self.lost = True
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._leading = False
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.error("%s: leading task failed: %r", self.identity, task.exception())
            log.info("%s: stopped leading lease %s/%s", self.identity, self.namespace, self.name)
            if self.on_stopped_leading:
                self.on_stopped_leading()
            if cancelled and self.release_on_cancel:
                await self._release()

    async def _renew_until_lost(self) -> None:
        while True:
            await self.clock.sleep(self.retry_period)
            deadline = self._renewed_at + self.renew_deadline
            while True:
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    log.warning("%s: failed to renew lease %s/%s within %.1fs", self.identity,
                                self.namespace, self.name, self.renew_deadline)
                    return
                try:
                    async with asyncio.timeout(left):
                        renewed = await self._try_acquire_or_renew()
                except TimeoutError:
                    renewed = False
                if renewed:
                    break
                if self.leader and self.leader != self.identity:
                    return  # someone else holds it: no point waiting for the deadline
                await self.clock.sleep(min(self.retry_period, max(0.0, deadline - self.clock.monotonic())))

    def _record(self, spec: dict[str, Any], lease: dict[str, Any]) -> None:
        """Remember what we saw; a changed record restarts the expiry clock."""
        old = (self._lease or {}).get("spec") or {}
        if (old.get("holderIdentity"), old.get("renewTime")) != (
                spec.get("holderIdentity"), spec.get("renewTime")) or self._lease is None:
            self._observed_at = self.clock.monotonic()
        self._lease = lease
        holder = spec.get("holderIdentity") or ""
        if holder != self.leader:
            self.leader = holder
            if self.on_new_leader and holder:
                self.on_new_leader(holder)

    async def _try_acquire_or_renew(self) -> bool:
        started = self.clock.monotonic()
        now = micro_time(self.clock.now())
        spec = {"holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.lease_duration),
                "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        try:
            try:
                lease = await self.client.get("leases", self.name, namespace=self.namespace)
            except NotFound:
                try:
                    created = await self.client.create(
                        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": self.name, "namespace": self.namespace},
                         "spec": spec})
                except AlreadyExists:
                    return False
                self._record(created["spec"], created)
                self._renewed_at = started
                return True
            old = lease.get("spec") or {}
            self._record(old, lease)
            holder = old.get("holderIdentity") or ""
            duration = old.get("leaseDurationSeconds") or math.ceil(self.lease_duration)
            # Judged at the attempt's start, the time written as acquireTime (client-go
            # takes one `now` for both): judged after a slow read instead, the Lease
            # would show a takeover before renewTime + leaseDurationSeconds. A record
            # this read found changed restarts the expiry clock, so it is held.
            if holder and holder != self.identity and self._observed_at + duration > started:
                return False  # held, and not expired by our own clock
            if holder == self.identity:  # a renewal (or our own restart): same term
                spec["acquireTime"] = old.get("acquireTime", now)
                spec["leaseTransitions"] = old.get("leaseTransitions", 0)
            else:
                spec["leaseTransitions"] = old.get("leaseTransitions", 0) + 1
            updated = await self.client.update({**lease, "spec": {**old, **spec}})
        except Conflict:
            return False  # someone else wrote first; we read again next round
        except Exception as exc:  # noqa: BLE001 - a failed round (server away...) is a "no"
            log.info("%s: lease %s/%s round failed: %s", self.identity, self.namespace, self.name, exc)
            return False
        self._record(updated["spec"], updated)
        self._renewed_at = started
        return True

    async def _release(self) -> None:
        """Give the Lease up (holder cleared, 1s duration) if we still hold it. A renewal
        cancelled in flight may have landed all the same, leaving our copy behind: on a
        conflict, read the Lease again and retry while it is still ours."""
        for _ in range(3):
            if self._lease is None or (self._lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = micro_time(self.clock.now())
            spec = {**self._lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                    "acquireTime": now, "renewTime": now}
            try:
                self._lease = await self.client.update({**self._lease, "spec": spec})
                return
            except Conflict:
                try:
                    self._lease = await self.client.get("leases", self.name, namespace=self.namespace)
                except Exception as exc:  # noqa: BLE001 - best effort, as below
                    log.info("%s: releasing lease %s/%s failed: %s", self.identity, self.namespace,
                             self.name, exc)
                    return
            except Exception as exc:  # noqa: BLE001 - best effort: expiry frees it anyway
                log.info("%s: releasing lease %s/%s failed: %s", self.identity, self.namespace, self.name, exc)
                return
