"""Probe workers: one per (pod, container, probe kind), as in the kubelet's prober manager.

A worker probes the latest run of its container every `periodSeconds`, once
`initialDelaySeconds` have passed since the run started, and turns attempts into a
result only when a threshold is crossed (`successThreshold` successes in a row, or
`failureThreshold` failures). Results, per container run:
- startup: unknown until it succeeds; liveness and readiness probes wait for it;
- readiness: false until it succeeds (so a new run is not ready);
- liveness: true until it fails.
A failed liveness or startup result puts the worker on hold until the container is
replaced: the pod worker kills it and restarts it by the restart policy. A changed result
calls `on_change(uid)` so the pod is synced (its Ready condition, or the restart).

Attempts block (exec, sockets in the pod's network namespace) and run through
`run_blocking`; periods read the injectable clock. One asyncio loop; not thread-safe.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from client.clock import Clock
from kubelet.probes import run_probe
from kubelet.runtime import ContainerStatus, Runtime

log = logging.getLogger("minik8s.kubelet.prober")

KINDS = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}
INITIAL = {"startupProbe": None, "livenessProbe": True, "readinessProbe": False}


@dataclass
class _Worker:
    uid: str
    container: dict
    kind: str  # startupProbe | livenessProbe | readinessProbe
    probe: dict
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    container_id: str | None = None
    result: bool | None = None
    successes: int = 0
    failures: int = 0
    on_hold: bool = False
    task: asyncio.Task | None = None


class ProbeManager:
    def __init__(self, runtime: Runtime, clock: Clock,
                 run_blocking: Callable[..., Awaitable], on_change: Callable[[str], None],
                 on_failure: Callable[[str, str, str, str], None] | None = None):
        self.runtime, self.clock, self.run_blocking = runtime, clock, run_blocking
        self.on_change = on_change
        self.on_failure = on_failure  # (uid, container name, kind, message): an event
        self.started_at = time.monotonic()
        self._workers: dict[tuple[str, str, str], _Worker] = {}
        self._runs: dict[tuple[str, str], ContainerStatus] = {}
        self._pod_ip: dict[str, str | None] = {}

    def update_pod(self, pod: dict, latest: dict[str, ContainerStatus], pod_ip: str | None) -> None:
        """Tell the workers of a pod which run of each container is current (starting
        workers for containers with probes)."""
        uid = pod["metadata"]["uid"]
        self._pod_ip[uid] = pod_ip
        for c in (pod.get("spec") or {}).get("containers") or []:
            run = latest.get(c["name"])
            if run is not None:
                self._runs[(uid, c["name"])] = run
            for kind in KINDS:
                if not c.get(kind):
                    continue
                key = (uid, c["name"], kind)
                w = self._workers.get(key)
                if w is None:
                    w = self._workers[key] = _Worker(uid, c, kind, c[kind])
                    w.task = asyncio.create_task(self._run(w), name=f"probe-{uid}-{c['name']}-{kind}")
                if run is not None and run.id != w.container_id:
                    w.wake.set()

    async def remove_pod(self, uid: str) -> None:
        tasks = []
        for key in [k for k in self._workers if k[0] == uid]:
            w = self._workers.pop(key)
            if w.task:
                w.task.cancel()
                tasks.append(w.task)
        for key in [k for k in self._runs if k[0] == uid]:
            del self._runs[key]
        self._pod_ip.pop(uid, None)
        await asyncio.gather(*tasks, return_exceptions=True)

    def result(self, uid: str, name: str, kind: str, container_id: str) -> bool | None:
        """The probe's result for that run; the initial value when nothing is known."""
        w = self._workers.get((uid, name, kind))
        if w is None or w.container_id != container_id:
            return INITIAL[kind]
        return w.result

    def has(self, uid: str, name: str, kind: str) -> bool:
        return (uid, name, kind) in self._workers

    # -- a worker ------------------------------------------------------------------

    async def _run(self, w: _Worker) -> None:
        period = max(1, int(w.probe.get("periodSeconds") or 10))
        # Right after a kubelet start, spread the workers of adopted pods over a period.
        if time.monotonic() - self.started_at < period:
            await self._sleep(w, random.uniform(0, period))
        while True:
            try:
                await self._attempt(w)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a probe bug must not stop probing
                log.exception("probe %s of %s/%s failed", w.kind, w.uid, w.container["name"])
            await self._sleep(w, period)

    async def _sleep(self, w: _Worker, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(w.wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        w.wake.clear()

    def _set(self, w: _Worker, value: bool | None) -> None:
        if w.result != value:
            w.result = value
            self.on_change(w.uid)

    async def _attempt(self, w: _Worker) -> None:
        name = w.container["name"]
        run = self._runs.get((w.uid, name))
        if run is None or not run.running:
            return
        if run.id != w.container_id:  # a new run: start over
            w.container_id, w.successes, w.failures, w.on_hold = run.id, 0, 0, False
            self._set(w, INITIAL[w.kind])
        if w.on_hold:
            return
        if w.kind != "startupProbe" and self.has(w.uid, name, "startupProbe") \
                and self.result(w.uid, name, "startupProbe", run.id) is not True:
            return
        if w.kind == "startupProbe" and w.result is True:
            return
        if time.time() - (run.started_at or 0) < int(w.probe.get("initialDelaySeconds") or 0):
            return
        ports = {p["name"]: p["containerPort"] for p in w.container.get("ports") or [] if p.get("name")}
        res = await self.run_blocking(run_probe, self.runtime, w.uid, run.id, w.probe,
                                      pod_ip=self._pod_ip.get(w.uid) or "127.0.0.1", ports=ports)
        if (w.uid, name, w.kind) not in self._workers or w.container_id != run.id:
            return  # removed or replaced meanwhile
        if res.success:
            w.successes, w.failures = w.successes + 1, 0
            threshold = int(w.probe.get("successThreshold") or 1)
            if w.successes >= threshold:
                self._set(w, True)
            return
        w.successes, w.failures = 0, w.failures + 1
        if self.on_failure:
            self.on_failure(w.uid, name, KINDS[w.kind], res.message)
        if w.failures >= int(w.probe.get("failureThreshold") or 3):
            if w.kind in ("livenessProbe", "startupProbe"):
                w.on_hold = True
            self._set(w, False)
