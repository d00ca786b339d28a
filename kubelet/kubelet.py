"""The kubelet's pod side: the node's pods from the API, one worker per pod, the sync.

Shape (pkg/kubelet: config + pod workers + SyncPod + PLEG + status manager):
- An informer on `pods` with `fieldSelector=spec.nodeName=<node>`: the kubelet sees only
  its own pods. Its handlers only hand the latest object to the pod's worker and wake it.
- One asyncio task per pod uid (a pod worker). A worker syncs its pod when woken (the pod
  changed, a container changed state, a probe result changed, a referenced ConfigMap or
  Secret changed) or when a timer it asked for fires (a crash back-off running out, the
  periodic resync). Syncs of one pod never overlap; pods sync in parallel. The sync is
  level-based: it reads the runtime's state and the pod's spec and acts on the
  difference, so a missed wake-up costs latency, never correctness, and a restarted
  kubelet picks up where the last one stopped (the runtime's state is on disk).
- The PLEG relists the runtime every `pleg_period` seconds and wakes the workers of pods
  whose containers or sandbox changed state (a container exited, was OOM-killed...).
- The sync looks, decides, then acts, as upstream's computePodActions and SyncPod: it
  reads the runtime's state, `compute_pod_actions` (kubelet/actions.py, pure) decides
  what to do, and the sync does it. Sandbox (network, hostname, IPC), volumes
  (ConfigMap/Secret data from watched objects, rewritten in place when they change;
  projected and downwardAPI files from kubelet/projected.py, with ServiceAccount tokens
  from the token manager, kubelet/token.py: the worker syncs again when a token wants
  its refresh, so the file is rewritten before the token expires),
  init containers one at a time to completion, then the app containers, each restarted
  by the restart policy with the crash back-off (kubelet/backoff.py), killed when its
  liveness probe fails or its image changes; then the
  status (kubelet/status.py) through the status subresource, only when it changed, as a
  JSON patch that tests the pod's uid first (so a pod re-created under the same name is
  never written by the old pod's worker).
- Before a container is created its image is made present by imagePullPolicy
  (kubelet/images/puller.py, with the pod's imagePullSecrets): the pull runs in the
  pod's own worker, outside every kubelet-wide limit, so a slow or failing pull holds up
  only its pod; a failed pull leaves the container waiting in ErrImagePull, then
  ImagePullBackOff, and is retried when its back-off (on the injected clock) ends. A pod
  deleted while its image pulls stops waiting for the pull (which finishes on its own,
  for whoever else wants the image) and is stopped at once.
- A worker is in one `PodState` (SyncPod, CompletedPod, TerminatingPod, TerminatedPod,
  Done), changed only by `PodWorker.to`, which refuses a step the life of a pod has not.
- A pod with a deletionTimestamp (or gone from the API) is stopped: SIGTERM, SIGKILL after
  the grace period, a final status with a terminal phase, then everything the pod had on
  the node is removed and only then the deletion is confirmed (DELETE with grace 0 and
  the uid as precondition), so a pod gone from the API is gone from the node. A pod that
  reached Succeeded or Failed has its sandbox stopped (its IP released) and keeps its
  containers' logs until it is deleted.

Metrics (kubelet/metrics.py): a pod's start when its status first says Running, each
sync's duration, each relist; running pods and containers are read from the last relist
when scraped. `sync_loop_check` is the `syncloop` health check.

Runtime calls block; they run in a private thread pool. Back-off and probe periods read
the injectable clock (`client.clock`); the PLEG polls in real time. One asyncio loop.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import enum
import functools
import logging
import os
import time
from typing import Any, Callable

from client.clock import Clock, RealClock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import DEFAULT_INDEXERS, NAMESPACE, Informer
from client.rest import Client
from kubelet import claims, envvars, metrics, projected, status as podstatus
from kubelet.actions import BackOff, PodActions, RuntimeStatus, compute_pod_actions
from kubelet.backoff import Backoff
from kubelet.dns import Configurer as DNSConfigurer, DNSConfig
from kubelet.eviction import Eviction, PodUsage, disk_usage, disruption_condition
from kubelet.images import reference
from kubelet.images.puller import ImageManager
from kubelet.images.service import ImageService
from kubelet.objects import ObjectCache, Ref
from kubelet.prober import ProbeManager
from kubelet.token import TokenError, TokenManager
from kubelet.runtime import (ContainerConfig, ContainerRuntimeError, ContainerStatus,
                             CreateContainerError, Mount, PodSandboxConfig, Resources, Runtime,
                             SandboxStatus, VolumeError)
from machinery import errors, klog, times
from machinery.errors import Conflict, Invalid, NotFound

log = logging.getLogger("minik8s.kubelet")

MOUNT_RETRY = 2.0        # seconds before a volume that failed is tried again
CREATE_RETRY = 10.0      # before a container that could not be created is tried again
SYNC_ERROR_BACKOFF = (0.5, 30.0)
POD_CLEANUP_TIMEOUT = 30   # how long an eviction waits for its pod to be stopped (podCleanupTimeout)


class PodState(enum.Enum):
    """Where a pod worker is in its pod's life (upstream's pod worker states, plus the
    end of a pod that completed while it is still in the API)."""
    SYNC = "SyncPod"                # making the node match the spec
    COMPLETED = "CompletedPod"      # reached Succeeded/Failed: sandbox stopped, logs kept
    TERMINATING = "TerminatingPod"  # deleted: its containers and sandbox are being stopped
    TERMINATED = "TerminatedPod"    # stopped: final status, then off the node and the API
    DONE = "Done"                   # nothing of it is left on the node; the worker ends


_TRANSITIONS = {
    PodState.SYNC: {PodState.COMPLETED, PodState.TERMINATING},
    PodState.COMPLETED: {PodState.TERMINATING},
    PodState.TERMINATING: {PodState.TERMINATED},
    PodState.TERMINATED: {PodState.DONE},
    PodState.DONE: set(),
}


class PodWorker:
    """Everything the kubelet keeps about one pod (by uid) between syncs."""

    def __init__(self, uid: str, pod: dict):
        self.uid, self.pod = uid, pod
        self.state = PodState.SYNC
        # Gone from the API (upstream's podSyncStatus.deleted): a fact about the API
        # object, not a step of the worker; it decides whether a final status is written
        # and the deletion confirmed.
        self.removed = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.status: dict | None = None         # the last status computed
        self.written: dict | None = None        # the last status written, and its version
        self.written_rv = 0
        self.writing: dict | None = None        # a status being written (its echo may come first)
        self.exits: dict[str, float] = {}       # container id -> clock time its exit was seen
        self.syncs = 0                          # syncs completed (tests wait on it)
        self.warned: set[str] = set()           # warnings already recorded as events
        # The runtime's state of the pod (as the PLEG keys it) that the last sync ended
        # with; None when that sync did not get to see it all.
        self.observed: dict | None = None
        self.first_seen = time.monotonic()      # kubelet_pod_start_duration_seconds' start
        self.start_observed = False             # ... observed once per pod
        self.ending = asyncio.Event()           # deleted, or gone from the API: stop waiting on pulls
        # The sync's view of the containers while it starts them (a status to show during a pull).
        self.starting: tuple[list, list, SandboxStatus] | None = None
        self.evicted: Eviction | None = None     # the eviction manager chose it: stop it, Failed
        self.eviction_done = asyncio.Event()     # ... and it is stopped, its volumes gone

    def to(self, state: PodState) -> None:
        """The one place a worker changes state; an illegal step is a bug, not a pod's."""
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"pod worker {self.uid}: no transition {self.state.value} -> {state.value}")
        self.state = state

    def terminate(self) -> None:
        """The pod is being deleted (or is gone): stop it, unless that is under way."""
        if self.state in (PodState.SYNC, PodState.COMPLETED):
            self.to(PodState.TERMINATING)

    @property
    def done(self) -> bool:
        return self.state is PodState.DONE

    @property
    def key(self) -> str:
        md = self.pod["metadata"]
        return f"{md.get('namespace')}/{md['name']}"


def pod_resources(spec: dict) -> Resources:
    """The pod cgroup's share: app containers add up, an init container runs alone, so
    each amount is the larger of the two (Kubernetes' effective pod resources)."""
    total = Resources.pod_total(Resources.from_spec(c.get("resources")) for c in spec.get("containers") or [])
    init = [Resources.from_spec(c.get("resources")) for c in spec.get("initContainers") or []]
    if init:
        total.cpu_request_milli = max([total.cpu_request_milli or 0]
                                      + [r.cpu_request_milli or 0 for r in init]) or None
        for attr in ("cpu_limit_milli", "memory_limit"):
            values = [getattr(r, attr) for r in init]
            if getattr(total, attr) is not None:
                setattr(total, attr, None if None in values else max([getattr(total, attr)] + values))
    return total


def sandbox_config(pod: dict, dns_config: DNSConfig | None = None) -> PodSandboxConfig:
    """dns_config: what kubelet/dns.py formed for the pod (None: the node's resolv.conf)."""
    md, spec = pod["metadata"], pod.get("spec") or {}
    return PodSandboxConfig(
        uid=md["uid"], name=md["name"], namespace=md.get("namespace", "default"),
        hostname=spec.get("hostname") or md["name"], host_network=bool(spec.get("hostNetwork")),
        host_ipc=bool(spec.get("hostIPC")), host_pid=bool(spec.get("hostPID")),
        share_process_namespace=bool(spec.get("shareProcessNamespace")),
        dns_servers=list(dns_config.servers) if dns_config else None,
        dns_searches=list(dns_config.searches) if dns_config else [],
        dns_options=list(dns_config.options) if dns_config else [],
        resources=pod_resources(spec))


def _volume_data(obj: dict | None, kind: str) -> dict[str, bytes | str] | None:
    if obj is None:
        return None
    if kind == "secrets":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data: dict[str, bytes | str] = dict(obj.get("data") or {})
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def _only_our_status(w: PodWorker, new: dict) -> bool:
    """Whether `new` is the pod as the worker last had it plus the status it wrote: the
    echo of its own write, not a reason to sync again (Kubernetes' pod config does not
    sync a pod for a status-only change either)."""
    old = w.pod
    ours = [s for s in (w.written, w.writing) if s is not None]
    if not ours or new.get("spec") != old.get("spec"):
        return False
    skip = ("resourceVersion", "managedFields")
    a, b = old.get("metadata") or {}, new.get("metadata") or {}
    if {k: v for k, v in a.items() if k not in skip} != {k: v for k, v in b.items() if k not in skip}:
        return False
    return any(podstatus.equal(new.get("status"), s) for s in ours)


_ENDING = (PodState.TERMINATING, PodState.TERMINATED)


def _observe_start(w: PodWorker) -> None:
    """The pod runs for the first time (as upstream, once its status says Running):
    kubelet_pod_start_duration_seconds, and the SLI for a pod without init containers."""
    w.start_observed = True
    metrics.POD_START_DURATION.observe(time.monotonic() - w.first_seen)
    created = w.pod["metadata"].get("creationTimestamp")
    if created and not (w.pod.get("spec") or {}).get("initContainers"):
        try:
            metrics.SLI_WITH_NETWORK.observe(max(0.0, time.time() - times.parse(created)))
        except ValueError:
            pass


def _pull_secret_refs(pod: dict) -> set[Ref]:
    ns = pod["metadata"].get("namespace", "default")
    return {("secrets", ns, r["name"]) for r in (pod.get("spec") or {}).get("imagePullSecrets") or []
            if isinstance(r, dict) and r.get("name")}


def _fmt_duration(seconds: float) -> str:
    """Go's time.Duration formatting for whole seconds: 10s, 1m20s, 5m0s."""
    s = int(round(seconds))
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


class Kubelet:
    def __init__(self, client: Client, runtime: Runtime, *, node_name: str,
                 node_ip: str | None = None, clock: Clock | None = None,
                 recorder: EventRecorder | None = None, resync_period: float = 60.0,
                 pleg_period: float = 1.0, threads: int = 64, backoff: Backoff | None = None,
                 node_allocatable: dict[str, str] | None = None, images: ImageService | None = None,
                 image_backoff: Backoff | None = None, tokens: TokenManager | None = None,
                 api_endpoint: tuple[str, int] | None = None, dns: DNSConfigurer | None = None):
        """api_endpoint: (host, port) of an API server the pods can reach, given to every
        container as KUBERNETES_SERVICE_HOST/PORT (envvars.kubernetes_service_env).
        dns: forms each pod's resolv.conf (kubelet/dns.py; default: no cluster DNS, the
        node's /etc/resolv.conf)."""
        self.client, self.runtime, self.node_name, self.node_ip = client, runtime, node_name, node_ip
        self.clock = clock or RealClock()
        self.recorder = recorder or EventRecorder(client, component="kubelet", host=node_name)
        self.resync_period, self.pleg_period = resync_period, pleg_period
        self.backoff = backoff or Backoff(self.clock.monotonic)
        # `images` None: the runtime's images are the host's root (--host-root-images).
        self.image_manager = ImageManager(images, backoff=image_backoff or Backoff(self.clock.monotonic))
        self.node_allocatable = node_allocatable or {}
        self.tokens = tokens or TokenManager(client, clock=self.clock)
        self.dns = dns or DNSConfigurer(node_ips=[node_ip] if node_ip else [])
        self.service_env = envvars.kubernetes_service_env(*api_endpoint) if api_endpoint else {}
        self.workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()  # uids fully removed while the API still lists them
        self._pulls: set[asyncio.Task] = set()  # image ensures pods stopped waiting for
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="runtime")
        # Creating sandboxes and containers is mostly CPU work (forks, namespaces, mounts,
        # cgroups, state files): far more of it at once than there are cores only adds
        # thread contention (measured: 50 at once cost 3x the CPU per pod; 4 per core
        # still ~10% more than 2), so a burst of pods starts two per core at a time.
        # Waits (grace periods, exec) are not limited.
        self._starting = asyncio.Semaphore(2 * (os.cpu_count() or 1))
        self.objects = ObjectCache(client, self._object_changed)
        self.prober = ProbeManager(runtime, self.clock, self.blocking, self._wake_uid, self._probe_failed)
        self.pods = Informer(client, "pods", field_selector=f"spec.nodeName={node_name}", indexers={})
        # Every Service, for the containers' service variables (the kubelet's serviceLister).
        self.services = Informer(client, "services", indexers={NAMESPACE: DEFAULT_INDEXERS[NAMESPACE]})
        self._tasks: list[asyncio.Task] = []
        self.syncs = 0  # completed syncs (tests and benchmarks read it)
        # The PLEG's last relist ({key: (pod uid, state)}): kubelet_running_pods and
        # kubelet_running_containers are read from it when scraped.
        self.relisted: dict = {}
        # When the PLEG loop last went round (time.monotonic): the `syncloop` health check.
        self.loop_ran = time.monotonic()
        # The eviction manager's admission check (kubelet/eviction.py): (admitted, reason,
        # message) for a pod about to start; None admits every pod.
        self.admit: Callable[[dict], tuple[bool, str, str]] | None = None

    async def blocking(self, fn: Callable, *args, **kw) -> Any:
        """Run a blocking runtime call in the kubelet's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, *, sweep: bool = True) -> None:
        """List the node's pods, sweep what belongs to none of them (garbage from a crash,
        pods deleted while the kubelet was away), then start a worker per pod."""
        self.services.start()  # not waited for: a container start that needs it waits
        self.pods.start()
        await self.pods.wait_for_sync()
        if sweep:
            keep = [p["metadata"]["uid"] for p in self.pods.store.list()]
            await self.blocking(self.runtime.cleanup_orphans, keep)
        self.pods.add_handler(on_add=self._pod_seen, on_update=lambda _old, new: self._pod_seen(new),
                              on_delete=self._pod_gone)
        metrics.track(self)
        self._tasks.append(asyncio.create_task(self._pleg(), name="pleg"))

    async def stop(self) -> None:
        """Stop syncing; pods keep running (a kubelet restart must not disturb them)."""
        await self.pods.stop()
        await self.services.stop()
        tasks = self._tasks + [w.task for w in self.workers.values() if w.task] + list(self._pulls)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.relisted = {}  # a stopped kubelet runs nothing, whatever its runtime still holds
        for uid in list(self.workers):
            await self.prober.remove_pod(uid)
        await self.objects.stop()
        try:  # events still queued get a moment, not a say in how long stopping takes
            await asyncio.wait_for(self.recorder.close(), 2.0)
        except TimeoutError:
            pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- events in: only wake workers -------------------------------------------------------

    def _pod_seen(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._finished:
            return
        w = self.workers.get(uid)
        if w is None:
            w = self.workers[uid] = PodWorker(uid, pod)
            klog.info_s(log, 2, "SyncLoop ADD", source="api", pod=w.key, podUID=uid)
            w.task = asyncio.create_task(self._work(w), name=f"pod-{uid}")
        echo = _only_our_status(w, pod)
        w.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            w.ending.set()
        if not echo:
            w.wake.set()

    def _pod_gone(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        self._finished.discard(uid)
        w = self.workers.get(uid)
        if w is not None:
            klog.info_s(log, 2, "SyncLoop REMOVE", source="api", pod=w.key, podUID=uid)
            w.pod, w.removed = pod, True
            w.ending.set()
            w.wake.set()

    def _wake_uid(self, uid: str) -> None:
        w = self.workers.get(uid)
        if w is not None:
            w.wake.set()

    def _object_changed(self, ref: Ref) -> None:
        for uid in self.objects.users(ref):
            self._wake_uid(uid)

    def _probe_failed(self, uid: str, name: str, kind: str, message: str) -> None:
        w = self.workers.get(uid)
        if w is not None:
            self._event(w, WARNING, "Unhealthy", f"{kind} probe failed: {message}".strip(), container=name)

    def _event(self, w: PodWorker, type_: str, reason: str, message: str, *,
               container: str | None = None) -> None:
        path = None
        if container is not None:
            spec = w.pod.get("spec") or {}
            init = any(c.get("name") == container for c in spec.get("initContainers") or [])
            path = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
        self.recorder.event(w.pod, type_, reason, message, field_path=path)

    def _service_env(self, pod: dict) -> dict[str, str]:
        if not self.services.has_synced():
            raise envvars.ConfigError("services have not yet been read at least once, cannot construct envvars")
        ns = pod["metadata"].get("namespace", "default")
        services = self.services.store.by_index(NAMESPACE, ns)
        if ns != "default":
            services += [s for name in envvars.MASTER_SERVICES
                         if (s := self.services.store.get(f"default/{name}")) is not None]
        links = (pod.get("spec") or {}).get("enableServiceLinks") is not False
        # api_endpoint given: the master Service's variables name that address, which a pod
        # reaches without a service proxy, rather than the Service's cluster IP.
        return envvars.service_env(services, ns, enable_service_links=links,
                                   master_override=self.service_env or None)

    def _pod_dns(self, w: PodWorker, pod: dict) -> DNSConfig:
        config, events = self.dns.pod_dns(pod)
        for ev in events:
            if ev.on_node:
                node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name,
                                                                         "uid": self.node_name}}
                self.recorder.event(node, WARNING, ev.reason, ev.message)
            else:
                self._event(w, WARNING, ev.reason, ev.message)
        return config

    # -- the PLEG ---------------------------------------------------------------------------

    def _relist(self) -> dict:
        state: dict = {}
        for c in self.runtime.list_containers():
            state[c.id] = (c.pod_uid, c.state)
        for s in self.runtime.list_pod_sandboxes():
            state["sandbox/" + s.uid] = (s.uid, s.ready)
        return state

    @staticmethod
    def _observed(sandbox: SandboxStatus, views: list[podstatus.ContainerView]) -> dict:
        """A pod's runtime state as `_relist` reports it, from what a sync saw."""
        state: dict = {c.id: c.state for v in views for c in v.runs}
        state["sandbox/" + sandbox.uid] = sandbox.ready
        return state

    def sync_loop_check(self) -> None:
        """The `syncloop` health check (the kubelet's syncLoopHealthCheck): fails when the
        loop that notices pods' runtime changes (the PLEG here) has not gone round for
        twice the resync period, and at least 5 minutes."""
        limit = max(2 * self.resync_period, 300.0)
        since = time.monotonic() - self.loop_ran
        if since > limit:
            raise RuntimeError(f"sync Loop took longer than expected: {since:.0f}s since it last ran")

    async def _pleg(self) -> None:
        last: dict = {}
        relisted_at = None
        while True:
            await asyncio.sleep(self.pleg_period)
            self.loop_ran = start = time.monotonic()
            if relisted_at is not None:
                metrics.PLEG_RELIST_INTERVAL.observe(start - relisted_at)
            relisted_at = start
            try:
                current = await self.blocking(self._relist)
            except Exception:  # noqa: BLE001 - a failed relist is retried next period
                log.exception("PLEG relist failed")
                continue
            metrics.PLEG_RELIST_DURATION.observe(time.monotonic() - start)
            self.relisted = current
            self.tokens.collect()  # expired tokens of pods gone without a worker's cleanup
            changed = {v[0] for k, v in current.items() if last.get(k) != v}
            changed |= {v[0] for k, v in last.items() if k not in current}
            last = current
            if not changed:
                continue
            # A change the pod's last sync already saw (most often the sandbox and the
            # container that sync itself started) needs no sync: syncs are level-based,
            # so only a state no sync has seen yet is news.
            by_pod: dict[str, dict] = {}
            for k, (uid, state) in current.items():
                if uid in changed:
                    by_pod.setdefault(uid, {})[k] = state
            for uid in changed:
                w = self.workers.get(uid)
                if w is not None and w.observed is not None and w.observed == by_pod.get(uid, {}):
                    continue
                self._wake_uid(uid)

    # -- pod workers ------------------------------------------------------------------------

    async def _wait(self, w: PodWorker, delay: float) -> None:
        if w.wake.is_set() or delay <= 0:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(w.wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _work(self, w: PodWorker) -> None:
        failures = 0
        try:
            while not w.done:
                w.wake.clear()
                # Delays are from the sync's start: time spent syncing (writing the
                # status...) does not lengthen a back-off.
                started = self.clock.monotonic()
                operation = "kill" if w.removed or w.state in _ENDING else "create" if w.syncs == 0 else "sync"
                timer = time.perf_counter()
                klog.info_s(log, 4, "SyncPod enter", pod=w.key, podUID=w.uid, operation=operation)
                try:
                    delay = await self._sync(w)
                    metrics.SYNC_DURATION[operation].observe(time.perf_counter() - timer)
                    klog.info_s(log, 4, "SyncPod exit", pod=w.key, podUID=w.uid, state=w.state.value)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried with back-off
                    failures += 1
                    delay = min(SYNC_ERROR_BACKOFF[0] * 2 ** (failures - 1), SYNC_ERROR_BACKOFF[1])
                    started = self.clock.monotonic()  # this back-off counts from the failure
                    log.warning("sync of pod %s (%s) failed: %r; retrying in %.1fs", w.key, w.uid, exc, delay)
                    if failures == 1:
                        log.debug("sync failure", exc_info=True)
                self.syncs += 1
                w.syncs += 1
                if not w.done:
                    delay = self.resync_period if delay is None else delay
                    await self._wait(w, started + delay - self.clock.monotonic())
        finally:
            if self.workers.get(w.uid) is w and w.done:
                del self.workers[w.uid]

    async def _sync(self, w: PodWorker) -> float | None:
        """One level-based pass over the pod: look at the runtime, decide what to do
        (`compute_pod_actions`), do it; -> when to look again (None: resync)."""
        pod = w.pod
        w.observed = None
        if w.removed:
            w.terminate()
        sandbox, error = None, None
        if w.state is PodState.SYNC:
            try:
                sandbox = await self.blocking(self.runtime.pod_sandbox_status, w.uid)
            except ContainerRuntimeError as e:
                error = e  # reported below, unless the pod is ending anyway
        actions = PodActions()
        if w.state in (PodState.SYNC, PodState.COMPLETED):
            actions = compute_pod_actions(pod, RuntimeStatus(sandbox))
            if actions.kill_pod:
                w.terminate()
        if w.state in (PodState.TERMINATING, PodState.TERMINATED):
            await self._terminate(w)
            return None
        if w.state is PodState.COMPLETED:
            return None  # stopped; waits for its deletion
        if actions.stop_sandbox:
            await self._finish(w)
            return None
        if w.evicted is not None:
            await self._evict(w, sandbox)
            return None
        if error is not None:
            return await self._sandbox_failed(w, error)
        if actions.create_sandbox and w.syncs == 0 and self.admit is not None and \
                (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            admitted, reason, message = self.admit(pod)
            if not admitted:  # as the kubelet's rejectPod: Failed, never started
                self._warn(w, reason, message)
                await self._write_status(w, {**(pod.get("status") or {}), "phase": "Failed",
                                             "reason": reason, "message": message})
                w.to(PodState.COMPLETED)
                return None
        if actions.create_sandbox:
            try:
                async with self._starting:
                    sandbox = await self.blocking(self.runtime.run_pod_sandbox,
                                                  sandbox_config(pod, self._pod_dns(w, pod)))
            except ContainerRuntimeError as e:
                return await self._sandbox_failed(w, e)
            metrics.STARTED_PODS.inc()
        assert sandbox is not None
        return await self._sync_containers(w, pod, sandbox)

    async def _sandbox_failed(self, w: PodWorker, e: ContainerRuntimeError) -> float | None:
        self._warn(w, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e.message}")
        sandbox = SandboxStatus(w.uid, w.pod["metadata"]["name"], "", False, None, time.time())
        return await self._report(w, sandbox, retry=5.0)

    async def _sync_containers(self, w: PodWorker, pod: dict, sandbox: SandboxStatus) -> float | None:
        """The containers' part of the sync, in a ready sandbox (upstream's SyncPod)."""
        uid, spec = w.uid, pod.get("spec") or {}
        now = self.clock.monotonic()
        retry: list[float] = []
        volume_paths, mount_error, refresh = await self._volumes(w, pod)
        if refresh is not None:  # a token wants its refresh then: sync to rewrite its file
            retry.append(refresh)
        runs = await self.blocking(self.runtime.list_containers, uid)
        by_name: dict[str, list[ContainerStatus]] = {}
        for c in sorted(runs, key=lambda c: c.attempt):
            by_name.setdefault(c.name, []).append(c)
            if c.state == "exited":
                w.exits.setdefault(c.id, now)
        init_specs, app_specs = spec.get("initContainers") or [], spec.get("containers") or []
        init = [podstatus.ContainerView(c["name"], c.get("image", ""), by_name.get(c["name"], []))
                for c in init_specs]
        app = [podstatus.ContainerView(c["name"], c.get("image", ""), by_name.get(c["name"], []))
               for c in app_specs]
        actions = compute_pod_actions(pod, RuntimeStatus(
            sandbox, runs, unhealthy=self._unhealthy(uid, app), volumes_ready=mount_error is None,
            # A running container's back-off is what it would be were it killed now.
            backoff={v.name: self.backoff.remaining(f"{uid}/{v.name}", w.exits.get(v.latest.id, now))
                     for v in init + app if v.latest is not None}))
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        kills = {k.name: k for k in actions.kill}
        starts = {s.name: s for s in actions.start}
        back_offs = {b.name: b for b in actions.back_off}
        w.starting = (init, app, sandbox)
        for c, v in zip(init_specs + app_specs, init + app):
            name = c["name"]
            if name in kills:
                kill = kills[name]
                self._event(w, NORMAL, "Killing", f"Container {name} {kill.reason}"
                            + (", will be restarted" if kill.restart else ""), container=name)
                v.runs[-1] = await self.blocking(self.runtime.stop_container, kill.container_id,
                                                 grace_period=grace)
                w.exits.setdefault(v.runs[-1].id, self.clock.monotonic())
            if name in back_offs:
                self._crash_loop(w, pod, v, back_offs[name])
                retry.append(back_offs[name].seconds)
            elif name in starts:
                start = starts[name]
                if start.restart:  # the back-off counts this restart
                    self.backoff.next(f"{uid}/{name}", w.exits.get(v.runs[-1].id, now))
                await self._start(w, pod, c, v, start.attempt, volume_paths, sandbox, retry)
        if actions.wait_for_volumes:
            retry.append(MOUNT_RETRY)

        # Keep the latest two runs of each container (the current one, and the one
        # `logs --previous` reads); remove older ones.
        for v in init + app:
            for old in v.runs[:-2]:
                await self.blocking(self.runtime.remove_container, old.id)
                w.exits.pop(old.id, None)
            del v.runs[:-2]
        w.observed = self._observed(sandbox, init + app)
        return await self._report(w, sandbox, init=init, app=app, retry=min(retry) if retry else None)

    def _unhealthy(self, uid: str, app: list[podstatus.ContainerView]) -> dict[str, str]:
        """Running app containers whose liveness or startup probe failed: id -> why."""
        out = {}
        for v in app:
            run = v.latest
            if run is None or not run.running:
                continue
            for kind, word in (("livenessProbe", "liveness"), ("startupProbe", "startup")):
                if self.prober.result(uid, v.name, kind, run.id) is False:
                    out[run.id] = f"failed {word} probe"
                    break
        return out

    def _crash_loop(self, w: PodWorker, pod: dict, v: podstatus.ContainerView, b: BackOff) -> None:
        """v waits out its crash back-off: say so in its status, and once per exit in an event."""
        uid, md = w.uid, pod["metadata"]
        v.waiting = ("CrashLoopBackOff",
                     f"back-off {_fmt_duration(self.backoff.delay(f'{uid}/{v.name}'))} restarting failed "
                     f"container={v.name} pod={md['name']}_{md.get('namespace')}({uid})")
        if b.container_id not in w.warned:  # one event per exit, not one per sync
            w.warned.add(b.container_id)
            self._event(w, WARNING, "BackOff", f"Back-off restarting failed container {v.name} "
                        f"in pod {md['name']}_{md.get('namespace')}({uid})", container=v.name)

    async def _report(self, w: PodWorker, sandbox: SandboxStatus, *,
                      init: list | None = None, app: list | None = None,
                      retry: float | None = None) -> float | None:
        """Update probes and the pod's status; finish the pod if it reached its end."""
        pod, spec = w.pod, w.pod.get("spec") or {}
        if init is None or app is None:
            init = [podstatus.ContainerView(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []]
            app = [podstatus.ContainerView(c["name"], c.get("image", "")) for c in spec.get("containers") or []]
        latest = {v.name: v.latest for v in app if v.latest is not None}
        self.prober.update_pod(pod, latest, sandbox.ip)
        for v in init:  # an init container is ready once it has completed (prober_manager)
            v.ready, v.started = v.succeeded, v.latest is not None and v.latest.running
        for v in app:
            run = v.latest
            if run is not None and run.running and v.waiting is None:
                def passed(kind: str, name: str = v.name, run_id: str = run.id) -> bool:
                    return (not self.prober.has(w.uid, name, kind)
                            or self.prober.result(w.uid, name, kind, run_id) is True)
                v.started = passed("startupProbe")
                v.ready = v.started and passed("readinessProbe")
        new = podstatus.pod_status(pod, init, app, pod_ip=sandbox.ip, host_ip=self.node_ip,
                                   sandbox_ready=sandbox.ready)
        # Observed once, when this kubelet turns the pod Running (a restarted kubelet
        # adopting a running pod observes nothing, as upstream's SyncPod).
        first_run = not w.start_observed and new["phase"] == "Running" and \
            (pod.get("status") or {}).get("phase") != "Running"
        await self._write_status(w, new)
        if first_run:
            _observe_start(w)
        if new["phase"] in podstatus.TERMINAL:
            await self._finish(w)
            return None
        return retry

    async def _volumes(self, w: PodWorker, pod: dict
                       ) -> tuple[dict[str, str], str | None, float | None]:
        """Set up (or refresh) every volume; -> (paths by name, the first error, seconds
        until a ServiceAccount token of the pod wants its refresh)."""
        refs = envvars.object_refs(pod) | projected.object_refs(pod) | _pull_secret_refs(pod)
        await self.objects.register(w.uid, refs)
        paths, error = {}, None
        refresh: float | None = None
        ns = pod["metadata"].get("namespace", "default")
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            data, payload = None, None
            try:
                if "projected" in vol:
                    payload, due = await self._projected(pod, vol)
                    if due is not None:
                        refresh = due if refresh is None else min(refresh, due)
                elif "downwardAPI" in vol:
                    spec = vol["downwardAPI"] or {}
                    payload = projected.downward_payload(
                        spec.get("items") or [], pod, default_mode=spec.get("defaultMode", projected.DEFAULT_MODE),
                        node_allocatable=self.node_allocatable)
            except (VolumeError, TokenError) as e:
                error = error or str(e)
                self._warn(w, "FailedMount", f'MountVolume.SetUp failed for volume "{vol.get("name")}" : {e}')
                continue
            if "configMap" in vol:
                data = _volume_data(self.objects.get("configmaps", ns, (vol["configMap"] or {}).get("name", "")),
                                    "configmaps")
            elif "secret" in vol:
                data = _volume_data(self.objects.get("secrets", ns, (vol["secret"] or {}).get("secretName", "")),
                                    "secrets")
            if "persistentVolumeClaim" in vol:
                try:
                    vol = await claims.resolve(self.client, ns, vol)
                except (VolumeError, errors.APIError) as e:
                    msg = e.message if isinstance(e, VolumeError) else str(e)
                    error = error or msg
                    self._warn(w, "FailedMount", f'MountVolume.SetUp failed for volume "{vol.get("name")}" : {msg}')
                    continue
            try:
                paths[vol["name"]] = await self.blocking(self.runtime.setup_volume, w.uid, vol, data=data,
                                                         payload=payload)
            except VolumeError as e:
                error = error or e.message
                self._warn(w, "FailedMount", f'MountVolume.SetUp failed for volume "{vol.get("name")}" : '
                                             f"{e.message}")
        return paths, error, refresh

    async def _projected(self, pod: dict, vol: dict) -> tuple[projected.Payload, float | None]:
        """A projected volume's files, its tokens requested (or cached) for the pod's
        ServiceAccount; and the seconds until the first of them wants a refresh."""
        md = pod["metadata"]
        ns, sa = md.get("namespace", "default"), (pod.get("spec") or {}).get("serviceAccountName") or "default"
        tokens: dict[int, str] = {}
        due: float | None = None
        for index, audience, seconds in projected.token_sources(vol):
            tokens[index] = await self.tokens.get(ns, sa, pod_name=md["name"], pod_uid=md["uid"],
                                                  audience=audience, expiration_seconds=seconds)
            left = self.tokens.refresh_in(ns, sa, pod_uid=md["uid"], audience=audience,
                                          expiration_seconds=seconds)
            if left is not None:
                due = left if due is None else min(due, left)
        payload = projected.projected_payload(vol["projected"] or {}, pod, get_object=self.objects.get,
                                              tokens=tokens, node_allocatable=self.node_allocatable)
        return payload, due

    def _warn(self, w: PodWorker, reason: str, message: str) -> None:
        """A warning event, once per distinct message while the pod lives."""
        if message not in w.warned:
            w.warned.add(message)
            self._event(w, WARNING, reason, message)

    def _pull_secrets(self, w: PodWorker, pod: dict) -> list[dict]:
        """The pod's imagePullSecrets that exist (getPullSecretsForPod); the missing ones
        are named in a warning and the pull goes on without them."""
        ns = pod["metadata"].get("namespace", "default")
        found, missing = [], []
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            name = (ref or {}).get("name")
            if not name:
                continue
            secret = self.objects.get("secrets", ns, name)
            if secret is None:
                missing.append(name)
            else:
                found.append(secret)
        if missing:
            self._event(w, WARNING, "FailedToRetrieveImagePullSecret",
                        f"Unable to retrieve some image pull secrets ({', '.join(missing)}); "
                        "attempting to pull the image may not succeed.")
        return found

    async def _ensure_image(self, w: PodWorker, pod: dict, c: dict, v: podstatus.ContainerView,
                            retry: list[float]) -> bool:
        """The container's image is on the node (pulled if its policy says so); else its
        waiting reason is set and False returned (startContainer's EnsureImageExists)."""
        name, image = c["name"], c.get("image", "")
        policy = c.get("imagePullPolicy") or reference.default_pull_policy(image)
        ensure = asyncio.ensure_future(self.image_manager.ensure(
            w.uid, image, policy, self._pull_secrets(w, pod),
            lambda type_, reason, message: self._event(w, type_, reason, message, container=name),
            before_pull=functools.partial(self._show_pulling, w)))
        ending = asyncio.ensure_future(w.ending.wait())
        try:
            await asyncio.wait({ensure, ending}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            ensure.cancel()
            raise
        finally:
            ending.cancel()
        if not ensure.done():
            # Deleted meanwhile: stop waiting, not pulling (other pods may share the pull;
            # the kubelet's stop() cancels what is still running).
            self._pulls.add(ensure)
            ensure.add_done_callback(self._pulls.discard)
            retry.append(0.0)
            return False
        ensured = ensure.result()
        if ensured.error is None:
            return True
        v.waiting = (ensured.error, ensured.message)
        self._event(w, WARNING, "Failed", f"Error: {ensured.error}", container=name)
        if ensured.retry is not None:
            retry.append(ensured.retry)
        return False

    async def _show_pulling(self, w: PodWorker) -> None:
        """Write the pod's status as it is before a pull starts (as the kubelet writes a
        pod's status before SyncPod acts), so a pod waiting on a pull is ContainerCreating."""
        if w.starting is None:
            return
        init, app, sandbox = w.starting
        new = podstatus.pod_status(w.pod, init, app, pod_ip=sandbox.ip, host_ip=self.node_ip,
                                   sandbox_ready=sandbox.ready)
        try:
            await self._write_status(w, new)
        except Exception as exc:  # noqa: BLE001 - the sync's own status write reports it
            log.debug("status before a pull of pod %s: %r", w.key, exc)

    async def _start(self, w: PodWorker, pod: dict, c: dict, v: podstatus.ContainerView,
                     attempt: int, volume_paths: dict[str, str], sandbox: SandboxStatus,
                     retry: list[float]) -> None:
        name = c["name"]
        if not await self._ensure_image(w, pod, c, v, retry):
            return
        try:
            env, command, args = envvars.resolve(c, pod, get_object=self.objects.get, pod_ip=sandbox.ip,
                                                 host_ip=self.node_ip, node_allocatable=self.node_allocatable,
                                                 service_env=self._service_env(pod))
            mounts = []
            read_only = claims.read_only(pod)
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volume_paths:
                    raise envvars.ConfigError(f'cannot find volume "{m.get("name")}" to mount into '
                                              f'container "{name}"')
                mounts.append(Mount(volume_paths[m["name"]], m.get("mountPath", ""),
                                    read_only=bool(m.get("readOnly")) or m["name"] in read_only,
                                    sub_path=m.get("subPath") or ""))
        except envvars.ConfigError as e:
            v.waiting = ("CreateContainerConfigError", str(e))
            self._warn(w, "Failed", f"Error: {e}")
            retry.append(MOUNT_RETRY)
            return
        security = c.get("securityContext") or {}
        config = ContainerConfig(name=name, image=c.get("image", ""), command=command, args=args, env=env,
                                 working_dir=c.get("workingDir") or "", mounts=mounts,
                                 resources=Resources.from_spec(c.get("resources")), attempt=attempt,
                                 read_only_root=bool(security.get("readOnlyRootFilesystem")),
                                 # The container's securityContext over the pod's.
                                 **{f: security.get(k, ((pod.get("spec") or {}).get("securityContext")
                                                        or {}).get(k))
                                    for f, k in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup"))})
        try:
            async with self._starting:
                run = await self.blocking(self.runtime.start_container, w.uid, config)
        except CreateContainerError as e:
            reason = e.reason if e.reason != "CreateContainerError" else "CreateContainerError"
            v.waiting = (reason, e.message)
            self._warn(w, "Failed", f"Error: {e.message}")
            retry.append(CREATE_RETRY)
            return
        v.runs.append(run)
        # Only a run that never started failed to start: a quick command (or a loaded
        # node, where this thread gets the CPU back late) can have exited, Completed,
        # by the time its status is read, and that container did start.
        if run.state == "exited" and run.started_at is None:  # StartError
            w.exits.setdefault(run.id, self.clock.monotonic())
            self._event(w, WARNING, "Failed", f"Error: {run.message}", container=name)
            retry.append(0.0)  # the restart policy decides at once
            return
        metrics.STARTED[any(ic is c for ic in (pod.get("spec") or {}).get("initContainers") or [])].inc()
        self._event(w, NORMAL, "Created", f"Created container {name}", container=name)
        self._event(w, NORMAL, "Started", f"Started container {name}", container=name)

    # -- status -----------------------------------------------------------------------------

    async def _write_status(self, w: PodWorker, new: dict) -> None:
        w.status = new
        pod = w.pod
        seen_rv = int(pod["metadata"].get("resourceVersion") or 0)
        # Until the informer has caught up with our last write, compare with what we wrote.
        current = pod.get("status") if seen_rv >= w.written_rv else w.written
        if podstatus.equal(new, current):
            return
        md = pod["metadata"]
        ops = [{"op": "test", "path": "/metadata/uid", "value": w.uid},
               {"op": "replace", "path": "/status", "value": new}]
        w.writing = new
        try:
            obj = await self.client.patch("pods", md["name"], ops, namespace=md.get("namespace"),
                                          patch_type="json", subresource="status")
        except NotFound:
            w.removed = True
            w.wake.set()
            return
        except Invalid as e:
            if "test operation failed" in e.message:  # the name now belongs to a new pod
                w.removed = True
                w.wake.set()
                return
            raise
        finally:
            w.writing = None
        w.written, w.written_rv = new, int(obj["metadata"]["resourceVersion"])

    # -- eviction (kubelet/eviction.py decides; this carries it out) -------------------------

    def eviction_pods(self) -> list[PodUsage]:
        """The pods an eviction may choose, with their usage (blocks: a thread's)."""
        pods_dir = getattr(self.runtime, "pods_dir", None)
        out = []
        for w in list(self.workers.values()):
            if w.state is not PodState.SYNC or w.evicted is not None or w.removed:
                continue
            u = self.runtime.usage(w.uid)
            disk, inodes = disk_usage(os.path.join(pods_dir, w.uid)) if pods_dir else (0, 0)
            out.append(PodUsage(w.pod, memory=u.working_set if u else 0, disk=disk, inodes=inodes))
        return out

    async def evict(self, ev: Eviction) -> None:
        """Stop the pod and report it Failed/Evicted (in its worker, at its next sync)."""
        w = self.workers.get(ev.pod["metadata"]["uid"])
        if w is None or w.state is not PodState.SYNC:
            return
        log.warning("evicting pod %s: %s", w.key, ev.message)
        self._event(w, WARNING, "Evicted", ev.message)
        w.evicted = ev
        w.wake.set()
        # As the eviction manager's waitForPodsCleanup: the next look at the signals
        # should see what this eviction freed, not evict a second pod for the same want.
        try:
            await asyncio.wait_for(w.eviction_done.wait(), POD_CLEANUP_TIMEOUT)
        except TimeoutError:
            log.warning("evicted pod %s was not cleaned up within %ds", w.key, POD_CLEANUP_TIMEOUT)

    async def _evict(self, w: PodWorker, sandbox: SandboxStatus | None) -> None:
        assert w.evicted is not None
        await self.prober.remove_pod(w.uid)
        await self.blocking(self.runtime.stop_pod_sandbox, w.uid, grace_period=w.evicted.grace_period)
        # Kubernetes removes an evicted pod's volumes at once (ShouldPodContentBeRemoved).
        await self.blocking(self.runtime.remove_volumes, w.uid)
        spec = w.pod.get("spec") or {}
        runs = await self.blocking(self.runtime.list_containers, w.uid)
        by_name: dict[str, list] = {}
        for c in sorted(runs, key=lambda c: c.attempt):
            by_name.setdefault(c.name, []).append(c)
        views = [[podstatus.ContainerView(c["name"], c.get("image", ""), by_name.get(c["name"], []))
                  for c in spec.get(k) or []] for k in ("initContainers", "containers")]
        final = podstatus.pod_status(w.pod, views[0], views[1], pod_ip=sandbox.ip if sandbox else None,
                                     host_ip=self.node_ip, sandbox_ready=False, terminal=True)
        now = times.rfc3339()
        final.update(phase="Failed", reason="Evicted", message=w.evicted.message)
        final["conditions"] = [c for c in final.get("conditions") or [] if c.get("type") != "DisruptionTarget"] + \
            [disruption_condition(w.evicted.message, now)]
        await self._write_status(w, final)
        w.to(PodState.COMPLETED)
        w.eviction_done.set()

    # -- the end of a pod ---------------------------------------------------------------------

    async def _finish(self, w: PodWorker) -> None:
        """The pod reached Succeeded or Failed: stop its sandbox, keep its logs."""
        if w.state is not PodState.SYNC:
            return
        await self.prober.remove_pod(w.uid)
        grace = float((w.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        await self.blocking(self.runtime.stop_pod_sandbox, w.uid, grace_period=grace)
        w.to(PodState.COMPLETED)

    async def _terminate(self, w: PodWorker) -> None:
        pod = w.pod
        md, spec = pod["metadata"], pod.get("spec") or {}
        if w.state is PodState.TERMINATING:
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if md.get("deletionGracePeriodSeconds") is not None:
                grace = min(grace, md["deletionGracePeriodSeconds"])
            await self.prober.remove_pod(w.uid)
            for c in await self.blocking(self.runtime.list_containers, w.uid):
                if c.running:
                    self._event(w, NORMAL, "Killing", f"Stopping container {c.name}", container=c.name)
            await self.blocking(self.runtime.stop_pod_sandbox, w.uid, grace_period=float(grace))
            w.to(PodState.TERMINATED)
        if not w.removed:
            sandbox = await self.blocking(self.runtime.pod_sandbox_status, w.uid)
            if sandbox is not None:
                runs = await self.blocking(self.runtime.list_containers, w.uid)
                by_name: dict[str, list] = {}
                for c in sorted(runs, key=lambda c: c.attempt):
                    by_name.setdefault(c.name, []).append(c)
                views = [[podstatus.ContainerView(c["name"], c.get("image", ""), by_name.get(c["name"], []))
                          for c in spec.get(k) or []] for k in ("initContainers", "containers")]
                final = podstatus.pod_status(pod, views[0], views[1], pod_ip=None, host_ip=self.node_ip,
                                             sandbox_ready=False, terminal=True)
                await self._write_status(w, final)
        # As the kubelet does (podResourcesAreReclaimed), the API object goes only once
        # the pod's processes, network, volumes and cgroups are gone from the node.
        await self.blocking(self.runtime.remove_pod, w.uid)
        if not w.removed:
            try:
                await self.client.delete("pods", md["name"], namespace=md.get("namespace"),
                                         grace_period_seconds=0, preconditions={"uid": w.uid})
            except (NotFound, Conflict):
                pass  # gone already, or the name is a new pod's
        await self.objects.unregister(w.uid)
        self.backoff.forget_prefix(w.uid + "/")
        self.image_manager.forget_pod(w.uid)
        self.tokens.forget_pod(w.uid)
        if not w.removed:
            self._finished.add(w.uid)  # until the API's delete event (finalizers may hold it)
        w.to(PodState.DONE)

    # -- what the node's endpoint reads ---------------------------------------------------------

    def pod(self, namespace: str, name: str) -> dict | None:
        return self.pods.store.get(f"{namespace}/{name}")

    def container_status(self, uid: str, name: str) -> dict | None:
        """The container's status as last computed (None before the first sync)."""
        w = self.workers.get(uid)
        if w is None or w.status is None:
            return None
        for cs in (w.status.get("containerStatuses") or []) + (w.status.get("initContainerStatuses") or []):
            if cs.get("name") == name:
                return cs
        return None
