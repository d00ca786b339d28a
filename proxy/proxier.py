"""The proxier: Services and EndpointSlices in, one nftables table out (kube-proxy's
nftables Proxier).

How it works
- Two informers (services, discovery.k8s.io/v1 endpointslices). Their handlers only
  note which Service (`ns/name`) changed and ask the sync runner for a sync; a slice's
  last-change trigger time is remembered for the network programming metric. Nothing
  else happens in a handler.
- `sync()` is level-based: for each changed Service it re-reads the Service and its
  slices from the informer caches, renders every port (proxy.rules.render) and
  compares the render with what was applied. Only Services whose render differs get
  commands, all in one nft transaction (proxy.rules.partial_plan). A full sync
  (proxy.rules.full_plan) rewrites everything and also removes what the kernel holds
  that nothing wants: at start (so a restarted proxy rebuilds from the API, without
  flushing conntrack: established connections keep their DNAT) and after any failed
  transaction. Every --sync-period the kernel's chains are checked against what was
  applied (one `nft -j list chains`); if they differ (the table was deleted or
  edited), that sync is full. Every hour (kube-proxy's FullSyncPeriod, or
  --sync-period if longer) all Services are also re-rendered and compared, so a missed
  event is caught. Re-rendering is CPU work on the loop (about 0.5 s at 1,000 Services
  x 10 endpoints on an idle core, seconds on a busy one): it yields to the loop every
  `RENDER_CHUNK` Services, and it is not done every --sync-period, since a change that
  arrives meanwhile waits for it. (A full rewrite of 1,000 Services x 10 endpoints
  takes nft about 2 to 3 s, in a subprocess.)
- The sync runner (kube-proxy's BoundedFrequencyRunner) batches: a sync runs at most
  once per --min-sync-period (with a burst of 2, so an isolated change is programmed at
  once) and at least once per --sync-period. Changes arriving during a sync are
  picked up by the next one.
- Nothing is synced before both informers have synced (a partial view would delete
  the rules of Services not listed yet).
- After a successful transaction: UDP conntrack entries of endpoints that went away
  are deleted; the health check servers of Local Services are updated; metrics. After
  a periodic (--sync-period) sync, chains that went out of use at least
  STALE_CHAIN_DELAY ago are deleted, in a transaction of their own (until then they
  are empty); no sync is run just for them.

Concurrency: one asyncio loop; one sync at a time (the runner awaits it). nft and
conntrack calls run as a subprocess / in a thread, so the informers keep running.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

from client.informer import Informer
from client.rest import Client
from machinery import times
from machinery.kinds import Kind
from proxy import conntrack, metrics, rules
from proxy.healthcheck import ServiceHealth, ServiceHealthServer
from proxy.model import TRIGGER_TIME_ANNOTATION, endpoints_for, service_ports, slice_service
from proxy.nft import Nft, NftError, Table

log = logging.getLogger("minik8s.proxy")

ENDPOINT_SLICES = Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True)
BY_SERVICE = "service"
SKIP_SERVICES = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
FULL_SYNC_PERIOD = 3600.0   # kube-proxy's proxyutil.FullSyncPeriod: every Service re-rendered
RENDER_CHUNK = 50           # Services rendered between two yields to the loop


def _slice_index(obj: dict[str, Any]) -> list[str]:
    svc = slice_service(obj)
    return [svc] if svc else []


class SyncRunner:
    """Calls `fn` when asked, at most `burst` times in a row and then once per
    `min_interval`, and at least once per `max_interval`."""

    def __init__(self, fn: Any, *, min_interval: float, max_interval: float, burst: int = 2):
        self.fn, self.min_interval, self.max_interval = fn, min_interval, max_interval
        self.burst = burst
        self.tokens = float(burst)
        self._last_refill = time.monotonic()
        self._wake = asyncio.Event()
        self._retry_at: float | None = None

    def run(self) -> None:
        self._wake.set()

    def retry_after(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        self._retry_at = at if self._retry_at is None else min(self._retry_at, at)

    def _refill(self) -> None:
        now = time.monotonic()
        if self.min_interval > 0:
            self.tokens = min(self.burst, self.tokens + (now - self._last_refill) / self.min_interval)
        else:
            self.tokens = self.burst
        self._last_refill = now

    async def loop(self) -> None:
        last_run = time.monotonic()
        while True:
            deadline = last_run + self.max_interval
            if self._retry_at is not None:
                deadline = min(deadline, self._retry_at)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) * self.min_interval)
                self._refill()
            self.tokens -= 1
            self._wake.clear()
            self._retry_at = None
            last_run = time.monotonic()
            try:
                await self.fn()
            except Exception:  # noqa: BLE001 - a bug in one sync must not stop the proxy
                log.exception("sync failed; retrying in %.1fs", max(self.min_interval, 1.0))
                self.retry_after(max(self.min_interval, 1.0))


class Proxier:
    def __init__(self, client: Client, cfg: rules.Config, *, sync_period: float = 30.0,
                 min_sync_period: float = 1.0, nodeport_cidrs: tuple[str, ...] = (),
                 nft: Nft | None = None):
        self.client, self.cfg = client, cfg
        self.sync_period, self.min_sync_period = sync_period, min_sync_period
        self.nodeport_cidrs = nodeport_cidrs
        self.nft = nft or Nft()
        self.table = Table("ip", cfg.table)
        # As kube-proxy's informers: Services another proxy implementation claims are
        # not ours, and headless Services' slices have nothing to program.
        self.services = Informer(client, "services", label_selector=SKIP_SERVICES)
        try:
            slices = client.resources.get("endpointslices")
        except Exception:  # noqa: BLE001 - a client table without the kind: the kind is still served
            slices = ENDPOINT_SLICES
        self.slices = Informer(client, slices, indexers={BY_SERVICE: _slice_index}, label_selector=SKIP_SERVICES)
        self.applied = rules.Applied()
        self.dirty: set[str] = set()
        self.trigger_times: dict[str, float] = {}   # slice key -> its newest unreported trigger time
        self.need_full = True
        self.last_full = 0.0                        # monotonic time every Service was last rendered
        self.last_check = 0.0                       # monotonic time the kernel's chains were last checked
        self.last_sync_ok: float | None = None     # wall time of the last successful sync
        self.last_queued: float | None = None      # monotonic time of the oldest unsynced change
        self.start_time = time.time()
        self.health = ServiceHealthServer()
        self.runner = SyncRunner(self.sync, min_interval=min_sync_period, max_interval=sync_period)
        self.syncs = 0
        self.pending = [0, 0]                       # Service, EndpointSlice changes not synced yet
        self.services.add_handler(on_add=self._service_changed, on_delete=self._service_changed,
                                  on_update=lambda old, new: self._service_changed(new))
        self.slices.add_handler(on_add=self._slice_changed, on_delete=self._slice_changed,
                                on_update=lambda old, new: self._slice_changed(new))

    # -- handlers: note and ask, nothing more ---------------------------------------------

    def _queue(self, service: str) -> None:
        self.dirty.add(service)
        if self.last_queued is None:
            self.last_queued = time.monotonic()
        metrics.LAST_QUEUED.set(time.time())
        if self.initialized():
            self.runner.run()

    def _service_changed(self, svc: dict[str, Any]) -> None:
        metrics.SERVICE_CHANGES.inc()
        self.pending[0] += 1
        metrics.SERVICE_CHANGES_PENDING.set(self.pending[0])
        md = svc["metadata"]
        self._queue(f"{md.get('namespace') or 'default'}/{md['name']}")

    def _slice_changed(self, slc: dict[str, Any]) -> None:
        metrics.ENDPOINT_CHANGES.inc()
        self.pending[1] += 1
        metrics.ENDPOINT_CHANGES_PENDING.set(self.pending[1])
        svc = slice_service(slc)
        if svc is None:
            return
        value = (slc["metadata"].get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION)
        if value:
            try:
                t = times.parse(value)
            except ValueError:
                t = 0.0
            # Changes from before this process started are the initial list, not
            # network programming this proxy did (kube-proxy skips them too). The
            # second it started counts: the time may be written in whole seconds.
            if t >= int(self.start_time):
                key = f"{slc['metadata'].get('namespace')}/{slc['metadata']['name']}"
                self.trigger_times[key] = max(t, self.trigger_times.get(key, 0.0))
        self._queue(svc)

    def initialized(self) -> bool:
        return self.services.has_synced() and self.slices.has_synced()

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Informers, then the first (full) sync once both have synced, then the runner."""
        tasks = [self.services.start(), self.slices.start()]
        try:
            while not self.initialized():
                await asyncio.sleep(0.05)
            log.info("informers synced: %d services, %d endpoint slices",
                     len(self.services.store), len(self.slices.store))
            await self.sync()
            await self.runner.loop()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.health.close()

    def healthy(self) -> bool:
        """kube-proxy's /healthz: synced once, and no change has waited for more than two
        sync periods."""
        if self.last_sync_ok is None:
            return False
        return self.last_queued is None or time.monotonic() - self.last_queued < 2 * self.sync_period

    # -- sync ---------------------------------------------------------------------------

    def _desired(self, service: str) -> dict[str, rules.Rendered]:
        """Renders of one Service's ports, read from the caches now."""
        svc = self.services.store.get(service)
        if svc is None:
            return {}
        slices = self.slices.store.by_index(BY_SERVICE, service)
        out = {}
        for sp in service_ports(svc):
            out[sp.key] = rules.render(sp, endpoints_for(sp, slices, self.cfg.hostname), self.cfg)
        return out

    def _nodeport_ips(self) -> tuple[str, ...]:
        if not self.nodeport_cidrs:
            return ()
        from pyroute2 import IPRoute
        nets = [ipaddress.ip_network(c, strict=False) for c in self.nodeport_cidrs]
        with IPRoute() as ipr:
            addrs = sorted({a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)})
        return tuple(a for a in addrs if not ipaddress.ip_address(a).is_loopback
                     and any(ipaddress.ip_address(a) in n for n in nets))

    def _cluster_ips(self, services: dict[str, rules.Rendered]) -> set[str]:
        return {r.port.cluster_ip for r in services.values() if r.port is not None}

    async def sync(self) -> None:
        if not self.initialized():
            return
        start = time.monotonic()
        full = self.need_full
        check = not full and start - self.last_check >= self.sync_period
        rerender = not full and start - self.last_full >= max(self.sync_period, FULL_SYNC_PERIOD)
        dirty, self.dirty = self.dirty, set()
        pending, self.pending = self.pending, [0, 0]
        triggers, self.trigger_times = self.trigger_times, {}
        queued, self.last_queued = self.last_queued, None
        now = time.monotonic()
        try:
            nodeport_ips = await asyncio.to_thread(self._nodeport_ips)
            pre: list[dict[str, Any]] = []
            stale_deleted: list[str] = []
            chains: set[str] = set()
            if full or check or rerender:
                self.last_check = start
                chains = {c["chain"]["name"] for c in await self.nft.list("chains", "ip")
                          if "chain" in c and c["chain"].get("table") == self.cfg.table}
            if check or rerender:
                # The kernel must still hold the chains this process made; only if it
                # does not (someone deleted or changed the table) is everything
                # rewritten: at 1,000 Services that costs seconds. Hourly, every
                # Service is re-rendered too (an event missed is caught here).
                expected = ({name for name, *_ in rules.BASE_CHAINS} | set(rules.FIXED_CHAINS)
                            | set(self.applied.stale_chains)
                            | {c for r in self.applied.services.values() for c in r.chains})
                if chains != expected:
                    log.warning("the table differs from what was synced (%d chains, %d expected): "
                                "rewriting it", len(chains), len(expected))
                    full = True
                elif rerender:
                    dirty |= set(self.services.store.keys())
                    dirty |= {r.port.service for r in self.applied.services.values() if r.port is not None}
                    self.last_full = start
            if full:
                desired: dict[str, rules.Rendered] = {}
                for i, key in enumerate(list(self.services.store.keys())):
                    if i and i % RENDER_CHUNK == 0:
                        await asyncio.sleep(0)   # a change meanwhile is queued for the next sync
                    desired.update(self._desired(key))
                sets = {s["set"]["name"] for s in await self.nft.list("sets", "ip")
                        if "set" in s and s["set"].get("table") == self.cfg.table}
                # Chains an earlier batch flushed (long enough ago) are deleted first.
                old_stale = [n for n in chains if n.startswith(rules.SERVICE_PREFIXES)
                             and n in self.applied.stale_chains
                             and now - self.applied.stale_chains[n] >= rules.STALE_CHAIN_DELAY]
                plan = rules.full_plan(self.table, self.cfg, self.applied, desired,
                                       cluster_ips=self._cluster_ips(desired), nodeport_ips=nodeport_ips,
                                       existing_chains=chains - set(old_stale), existing_sets=sets, now=now)
                pre = [self.table.chain("delete", n) for n in old_stale]
                stale_deleted = old_stale
                changed_keys = set(desired) | set(self.applied.services)
            else:
                changed: dict[str, rules.Rendered | None] = {}
                applied_by_service: dict[str, list[str]] = {}
                for key, r in self.applied.services.items():
                    if r.port is not None:
                        applied_by_service.setdefault(r.port.service, []).append(key)
                for i, service in enumerate(dirty):
                    if i and i % RENDER_CHUNK == 0:
                        await asyncio.sleep(0)
                    for key in applied_by_service.get(service, ()):
                        changed[key] = None       # gone, unless rendered again just below
                    changed.update(self._desired(service))
                after_services = {**self.applied.services,
                                  **{k: v for k, v in changed.items() if v is not None}}
                for k, v in changed.items():
                    if v is None:
                        after_services.pop(k, None)
                plan = rules.partial_plan(self.table, self.applied, changed,
                                          cluster_ips=self._cluster_ips(after_services),
                                          nodeport_ips=nodeport_ips, now=now)
                changed_keys = set(changed)
            if pre:
                try:
                    await self.nft.run(pre)
                    for n in stale_deleted:
                        plan.after.stale_chains.pop(n, None)
                except NftError as e:  # still referenced (try again later), or already gone
                    log.warning("could not delete stale chains %s yet: %s", ", ".join(stale_deleted), e)
                    there = {c["chain"]["name"] for c in await self.nft.list("chains", "ip")
                             if "chain" in c and c["chain"].get("table") == self.cfg.table}
                    for n in [n for n in plan.after.stale_chains if n not in there]:
                        del plan.after.stale_chains[n]
            await self.nft.run(plan.commands)
        except Exception as e:  # noqa: BLE001 - nft refused, or could not run: retried, never fatal
            metrics.SYNC_FAILURES.inc()
            log.error("nftables sync failed (%s sync); a full sync follows: %s", "full" if full else "partial", e)
            self.need_full = True
            self.dirty |= dirty
            self.pending = [a + b for a, b in zip(self.pending, pending)]
            self.last_queued = queued if self.last_queued is None else min(queued or now, self.last_queued)
            for k, t in triggers.items():
                self.trigger_times[k] = max(t, self.trigger_times.get(k, 0.0))
            self.runner.retry_after(self.min_sync_period or 1.0)
            return
        before, self.applied = self.applied, plan.after
        if full:
            self.need_full = False
            self.last_full = self.last_check = start
        elapsed = time.monotonic() - start
        (metrics.SYNC_FULL_DURATION if full else metrics.SYNC_PARTIAL_DURATION).observe(elapsed)
        wall = time.time()
        for t in triggers.values():
            metrics.NETWORK_PROGRAMMING.observe(max(0.0, wall - t))
        self.last_sync_ok = wall
        metrics.SERVICE_CHANGES_PENDING.set(self.pending[0])
        metrics.ENDPOINT_CHANGES_PENDING.set(self.pending[1])
        self.syncs += 1
        await self._after_sync(before, changed_keys)
        if not full and (check or rerender):
            await self._delete_stale_chains(now)
        metrics.SYNC_DURATION.observe(time.monotonic() - start)
        metrics.LAST_SYNC.set(time.time())
        log.log(logging.DEBUG if not full else logging.INFO,
                "synced %s: %d service ports (%d considered), %d commands, %.1f ms",
                "all rules" if full else "changes", len(self.applied.services), len(changed_keys),
                len(plan.commands), elapsed * 1000)

    async def _delete_stale_chains(self, now: float) -> None:
        """Deletes the chains stale for STALE_CHAIN_DELAY, in their own transaction after
        a periodic sync's, as kube-proxy deletes them at a later sync. Not after every
        sync: that is one more nft process (about 50 ms of CPU at 1,000 Services, nft
        reads the whole table first) per change and node, competing with the other
        nodes' syncs of the same change. No sync is scheduled for them either: it would
        spend a --min-sync-period token that a change may need. An empty chain harms
        nothing meanwhile."""
        cmds, names = rules.stale_chain_deletes(self.table, self.applied, now)
        if not cmds:
            return
        try:
            await self.nft.run(cmds)
            for n in names:
                self.applied.stale_chains.pop(n, None)
        except NftError as e:  # still referenced (try again later), or already gone
            log.warning("could not delete stale chains %s yet: %s", ", ".join(names), e)
            try:
                there = {c["chain"]["name"] for c in await self.nft.list("chains", "ip")
                         if "chain" in c and c["chain"].get("table") == self.cfg.table}
            except NftError:
                return
            for n in [n for n in self.applied.stale_chains if n not in there]:
                del self.applied.stale_chains[n]

    async def _after_sync(self, before: rules.Applied, keys: set[str]) -> None:
        stale: list[conntrack.StaleFlow] = []
        for key in keys:
            new = self.applied.services.get(key)
            old = before.services.get(key)
            either = new or old
            sp = either.port if either is not None else None
            if sp is None or sp.protocol != "udp":
                continue
            vips = (sp.cluster_ip, *sp.external_ips, *sp.lb_ips)
            new_eps = {(e.ip, e.port) for e in new.categorized.reachable} if new and new.categorized else set()
            old_eps = {(e.ip, e.port) for e in old.categorized.reachable} if old and old.categorized else set()
            if new_eps and not old_eps:
                # Datagrams sent while the port had no endpoints (or before this proxy
                # knew it) made entries that go nowhere, and the flow keeps them.
                stale.append(conntrack.StaleFlow(vips, sp.port, sp.node_port, None))
            for ep in old_eps - new_eps:
                stale.append(conntrack.StaleFlow(vips, sp.port, sp.node_port, ep))
        if stale:
            try:
                n = await asyncio.to_thread(conntrack.clear_udp, stale)
                log.info("deleted %d stale UDP conntrack entries", n)
            except Exception as e:  # noqa: BLE001 - logged; the next change tries again
                log.error("could not clear stale UDP conntrack entries: %s", e)
        no_local = {"internal": 0, "external": 0}
        for r in self.applied.services.values():
            c, p = r.categorized, r.port
            if c is not None and p is not None and c.has_endpoints and not c.local:
                no_local["internal"] += p.internal_local
                no_local["external"] += p.external_local
        for policy, n in no_local.items():
            metrics.NO_LOCAL_ENDPOINTS.labels(policy).set(n)
        wanted: dict[int, ServiceHealth] = {}
        for r in self.applied.services.values():
            sp = r.port
            if sp is not None and sp.health_check_node_port and r.categorized is not None:
                local = len([e for e in r.categorized.local if e.ready])
                wanted[sp.health_check_node_port] = ServiceHealth(sp.namespace, sp.name, local)
        await self.health.sync(wanted)
