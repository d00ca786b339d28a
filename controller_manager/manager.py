"""The controller manager: every enabled controller in one process, on one shared set
of informers, under leader election, with /healthz and /metrics.

What it guarantees
- `--controllers` reads as kube-controller-manager's: a comma list where `name`
  enables, `-name` disables and `*` enables the rest; the first mention of a name
  wins. An unknown name is an error before anything starts.
- Options (the controller-option flags) are one flat set of names; each controller
  gets, in its `Options` dataclass, the ones it declares. A name no controller in the
  table declares is an error when the Manager is built, never silently dropped.
- Controllers share one SharedInformerFactory, so a kind several of them read is
  listed and watched once. Informers start only once this process leads, and each
  controller starts its workers only after its caches have synced.
- With leader election, only the holder of the Lease (`kube-controller-manager` in
  `kube-system` by default) runs controllers; losing it stops them at once and `run`
  returns 1, as kube-controller-manager exits, to be restarted clean. Cancelling
  `run` (SIGTERM) stops the controllers and gives the Lease up, so a successor need
  not wait for it to expire.
- With a port (kube-controller-manager's 10257 from `minik8s controller-manager`; 0:
  none), client.componentserver serves `/metrics` and `/healthz`, `/livez`, `/readyz`
  (`?verbose`, `?exclude=`, one path per check). Checks: `ping`; `leaderElection`
  when electing (fails when this leader has stopped renewing); on /healthz one check
  per running controller, named after it, as kube-controller-manager adds them; on
  /readyz `informer-sync` (fails until the running controllers' informers have synced;
  a standby runs none, so it is ready). /metrics: client/'s workqueue metrics, one
  queue per controller named after it, REST client metrics,
  `leader_election_master_status{name=<the Lease's name>}` when electing,
  controller_manager.metrics' own, and the process's CPU and RSS. A port that cannot be
  bound is an OSError from `run`.

Concurrency: one asyncio loop for everything, the metrics and health server's
included (it reads the controllers' state without locks).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import Any, Callable, Mapping

from client.clock import Clock
from client.componentserver import ComponentServer, informer_sync_check, leader_election_check
from client.events import EventRecorder
from client.informer import SharedInformerFactory, strip_managed_fields
from client.leaderelection import LeaderElector
from client.metrics import track_leader
from client.rest import Client
from controller_manager.controller import Controller
from controller_manager.controllers import REGISTRY
from machinery.healthz import PING, named_check

log = logging.getLogger("minik8s.controller_manager")

# Off unless named, as kube-controller-manager's ControllersDisabledByDefault (kubeadm
# names them: --controllers=*,bootstrapsigner,tokencleaner).
DISABLED_BY_DEFAULT: frozenset[str] = frozenset({"bootstrapsigner", "tokencleaner"})


def enabled_controllers(spec: str | list[str], known: list[str] | None = None) -> list[str]:
    """Names `--controllers` turns on, in table order (IsControllerEnabled)."""
    known = list(REGISTRY) if known is None else known
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for item in items:
        name = item[1:] if item.startswith("-") else item
        if name != "*" and name not in known:
            raise ValueError(f'"{name}" is not in the list of known controllers: {", ".join(known)}')

    def on(name: str) -> bool:
        star = False
        for item in items:
            if item == name:
                return True
            if item == "-" + name:
                return False
            star = star or item == "*"
        return star and name not in DISABLED_BY_DEFAULT
    return [name for name in known if on(name)]


def controller_options(names: list[str], options: Mapping[str, Any]) -> dict[str, Any]:
    """Each named controller's `Options`, filled from the flat `options` with the fields
    it declares. ValueError if an option is declared by no controller in the table (a
    misspelt flag wiring, say), or has a value its dataclass refuses."""
    declared = {f.name for cls in REGISTRY.values() for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - declared)
    if unknown:
        raise ValueError(f"no controller has the option(s) {', '.join(unknown)}")
    out = {}
    for name in names:
        cls = REGISTRY[name]
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        out[name] = cls.Options(**{k: v for k, v in options.items() if k in fields})
    return out


class SpamFilter:
    """An EventRecorder behind Kubernetes' EventSourceObjectSpamFilter: per involved
    object, a token bucket of `burst` events refilled at `qps` (25, one per five
    minutes), so a ReplicaSet creating a thousand pods records 25 SuccessfulCreate
    events, not a thousand writes competing with the pods'. Buckets live in an LRU of
    4096 objects, as Kubernetes keeps them."""

    def __init__(self, recorder: EventRecorder, *, burst: int = 25, qps: float = 1 / 300,
                 size: int = 4096, now: Callable[[], float] = time.monotonic):
        self.recorder, self.burst, self.qps, self.size, self.now = recorder, burst, qps, size, now
        self._buckets: collections.OrderedDict[tuple, tuple[float, float]] = collections.OrderedDict()
        self.dropped = 0

    def event(self, obj: dict, type: str, reason: str, message: str, **kw: Any) -> None:
        md = obj.get("metadata") or {}
        key = (obj.get("kind"), obj.get("apiVersion"), md.get("namespace"), md.get("name"), md.get("uid"))
        now = self.now()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.qps)
        if tokens >= 1:
            tokens -= 1
            self.recorder.event(obj, type, reason, message, **kw)
        else:
            self.dropped += 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.size:
            self._buckets.popitem(last=False)

    async def flush(self) -> None:
        await self.recorder.flush()

    async def close(self) -> None:
        await self.recorder.close()


class Manager:
    def __init__(self, client: Client, *, controllers: list[str], workers: int = 5,
                 options: dict[str, Any] | None = None, leader_elect: bool = True,
                 lease_name: str = "kube-controller-manager", lease_namespace: str = "kube-system",
                 identity: str = "", lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, bind_address: str = "127.0.0.1", port: int = 0,
                 clock: Clock | None = None):
        self.client = client
        self.names = controllers
        self.workers = workers
        self.options = controller_options(controllers, options or {})
        self.leader_elect = leader_elect
        self.bind_address, self.port = bind_address, port
        self.clock = clock
        self.controllers: dict[str, Controller] = {}
        self.server = ComponentServer()
        self.elector: LeaderElector | None = None
        if leader_elect:
            self.elector = LeaderElector(
                client, name=lease_name, namespace=lease_namespace, identity=identity,
                on_started_leading=self.run_controllers, lease_duration=lease_duration,
                renew_deadline=renew_deadline, retry_period=retry_period,
                release_on_cancel=True, clock=clock)
            self.server.health.add(leader_election_check(self.elector))
            track_leader(self.elector)
        self.server.health.add(named_check("informer-sync", self._informers_synced), endpoints=["readyz"])
        self._recorders: list[SpamFilter] = []

    def _informers_synced(self) -> None:
        # Read when asked: the informers exist only once this process leads.
        shared = dict.fromkeys(i for c in self.controllers.values() for i in c.informers)
        informer_sync_check(shared).check()

    # -- the controllers ----------------------------------------------------------------

    def build(self, factory: SharedInformerFactory) -> dict[str, Controller]:
        built = {}
        for name in self.names:
            # Events name their source as Kubernetes' controllers do: `<name>-controller`,
            # unless the controller says otherwise (`replication-controller`).
            component = getattr(REGISTRY[name], "event_source", "") or f"{name}-controller"
            recorder = SpamFilter(EventRecorder(self.client, component=component))
            self._recorders.append(recorder)
            built[name] = REGISTRY[name](self.client, factory, recorder=recorder, clock=self.clock,
                                         options=self.options[name])
        return built

    async def run_controllers(self) -> None:
        """Build, start informers, run every controller's workers; until cancelled."""
        # No controller reads managedFields: kube-controller-manager's informers drop them too.
        factory = SharedInformerFactory(self.client, transform=strip_managed_fields)
        self.controllers = self.build(factory)
        # kube-controller-manager's per-controller check on /healthz (a ping: that the
        # controller was started). Built once per process: losing the Lease ends it.
        named = {c.name for c in self.server.health.checks("healthz")}
        for name in self.controllers:
            if name not in named:
                self.server.health.add(named_check(name, PING.check), endpoints=["healthz"])
        factory.start()
        log.info("controllers started: %s", ", ".join(self.controllers) or "(none)")
        try:
            # A controller that fails stops the others; cancelling stops them all.
            async with asyncio.TaskGroup() as tg:
                for n, c in self.controllers.items():
                    tg.create_task(c.run(self.workers), name=f"controller-{n}")
        finally:
            for c in self.controllers.values():
                c.queue.shutdown()
            await factory.stop()
            for r in self._recorders:
                await r.close()
            self._recorders.clear()

    async def run(self) -> int:
        """Serve /metrics and health (with a port) and run the controllers (when leading).
        -> exit code. OSError when the port cannot be bound."""
        if self.port:
            await self.server.start(self.bind_address, self.port)
        try:
            if self.elector is None:
                await self.run_controllers()
                return 0
            await self.elector.run()
            log.error("leader election lost")
            return 1
        finally:
            await self.server.stop()
