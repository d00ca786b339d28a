"""The garbage collector: deletes objects whose owners are gone, and carries out the
propagation policy the API server recorded on a deleted owner (Kubernetes'
pkg/controller/garbagecollector).

What it guarantees
- A dependent is deleted only when every owner it names is absent, and absence is
  established by a live GET (an owner the cache lacks may only be late in the cache):
  an ownerReference whose uid differs from the object now holding that name counts
  as absent. Owners confirmed absent are remembered by uid, so a thousand dependents
  of one deleted owner cost one GET. The dependent is deleted with a uid
  precondition, so a new object that took its name is never hit.
- A dependent with some owners present and some absent (or deleting in foreground)
  keeps the live ones: the others' references are removed.
- Background (the default): the owner is gone at once and its dependents follow.
- Foreground: an owner with deletionTimestamp and the `foregroundDeletion` finalizer
  has its dependents deleted (those that have dependents of their own in foreground
  too); the finalizer goes once no dependent with `blockOwnerDeletion` remains, and
  with it the owner.
- Orphan: an owner with deletionTimestamp and the `orphan` finalizer has its uid
  removed from its dependents' ownerReferences, then the finalizer goes.
- Owner kinds this server does not serve, and namespaced owners named by
  cluster-scoped dependents, cannot be resolved: such references are never treated
  as absent (Kubernetes does the same).

How: one informer per served kind (Events excepted, as Kubernetes ignores them), each
indexed by uid and by owner uid; together they are the owner -> dependents graph.
Keys are (plural, namespace/name). Handlers enqueue an object whose ownerReferences
or deletion state changed, the dependents of an object that went away, and the
owners of a dependent that went away or changed its references (a foreground owner
waits for exactly that). Cache-only checks find the common case (every owner in the
cache, none deleting) and cost no request.

Known gap, shared with Kubernetes: a dependent created just before its owner is
deleted with Orphan or Foreground, and not yet in the cache when the owner is
processed, is not waited for; with Orphan it keeps a dangling reference and is later
collected as garbage.

Kinds added later (custom resources): every `discovery_period` seconds (Kubernetes'
collector resyncs its monitors from discovery every 30 s) the collector reads the
server's discovery and starts an informer for each stored kind it does not watch yet;
until then, a dependent of such a kind is not seen, and an owner of such a kind is
resolved by a live GET. Keys name a built-in kind by its plural and any other by
`<plural>.<group>`, so a custom resource sharing a built-in's plural stays apart.

Concurrency: one asyncio loop; the work queue never hands one key to two workers.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass

from client.events import WARNING
from client.informer import OWNER_UID, Informer, key_of, split_key
from client.rest import Resource
from controller_manager import controller_utils
from controller_manager.controller import Controller
from machinery import errors, kinds

log = logging.getLogger("minik8s.controller.garbagecollector")

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
UID = "uid"
IGNORED = {("", "events")}  # Kubernetes' default ignored resources
_BUILTIN = {(k.group, k.plural) for k in kinds.KINDS}


def _name(r: Resource) -> str:
    """The collector's name for a kind: its plural if built in, else `<plural>.<group>`."""
    return r.plural if (r.group, r.plural) in _BUILTIN or not r.group else f"{r.plural}.{r.group}"

# How an owner reference resolves.
SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"


def _uid(obj: dict) -> list[str]:
    uid = obj["metadata"].get("uid")
    return [uid] if uid else []


def _refs(obj: dict) -> list[dict]:
    return list(obj["metadata"].get("ownerReferences") or ())


def _deleting(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _finalizers(obj: dict) -> list[str]:
    return list(obj["metadata"].get("finalizers") or ())


def _gc_state(obj: dict) -> tuple:
    """What the collector reacts to in an update."""
    md = obj["metadata"]
    return (md.get("uid"), md.get("ownerReferences"), bool(md.get("deletionTimestamp")),
            ORPHAN in (md.get("finalizers") or ()), FOREGROUND in (md.get("finalizers") or ()))


@dataclass(frozen=True, kw_only=True)
class GarbageCollectorOptions:
    absent_owner_cache_size: int = 1024  # owners known to be gone, remembered (an LRU)
    discovery_period: float = 30.0  # seconds between discoveries of new kinds (0: never)


class GarbageCollector(Controller):
    name = "garbagecollector"
    Options = GarbageCollectorOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: GarbageCollectorOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        opts = options or GarbageCollectorOptions()
        self.by_plural: dict[str, tuple[Resource, Informer]] = {}
        self._absent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._absent_size = opts.absent_owner_cache_size
        self._factory = factory
        self._discovery_period = opts.discovery_period
        self._monitor(client.resources)

    def _monitor(self, resources) -> list[Informer]:
        """Watch every stored kind of `resources` not watched yet; -> the new informers."""
        added = []
        for r in controller_utils.stored_kinds(resources):
            name = _name(r)
            if (r.group, r.plural) in IGNORED or name in self.by_plural:
                continue
            inf = self._factory.informer(r)
            inf.add_indexers({UID: _uid})
            self.by_plural[name] = (r, inf)
            self.informers.append(inf)
            self._wire(name, inf)
            added.append(inf)
        return added

    async def run(self, workers: int = 1) -> None:
        if self._discovery_period <= 0:
            return await super().run(workers)
        resync = asyncio.create_task(self._resync_kinds(), name=f"{self.name}-discovery")
        try:
            await super().run(workers)
        finally:
            resync.cancel()

    async def _resync_kinds(self) -> None:
        discover = getattr(self.client, "discover", None)
        if discover is None:  # a client without discovery (tests' recording clients)
            return
        while True:
            await self.clock.sleep(self._discovery_period)
            try:
                await discover()
            except Exception as e:  # noqa: BLE001 - a Status, a dropped connection...: next period
                log.warning("%s: discovery failed: %s", self.name, e)
                continue
            for inf in self._monitor(self.client.resources):
                log.info("%s: watching %s.%s", self.name, inf.resource.plural, inf.resource.group)
                inf.start()

    # -- handlers: object -> keys ------------------------------------------------------

    def _wire(self, plural: str, inf: Informer) -> None:
        def on_add(obj: dict) -> None:
            if _refs(obj) or _deleting(obj):
                self.enqueue((plural, key_of(obj)))

        def on_update(old: dict, new: dict) -> None:
            if _gc_state(old) != _gc_state(new):
                self.enqueue((plural, key_of(new)))
            if _refs(old) != _refs(new):
                self._enqueue_owners(old, new)

        def on_delete(obj: dict) -> None:
            self._enqueue_dependents(obj)
            self._enqueue_owners(obj)

        inf.add_handler(on_add=on_add, on_update=on_update, on_delete=on_delete)

    def _enqueue_dependents(self, owner: dict) -> None:
        uid = owner["metadata"].get("uid")
        for plural, (_, inf) in self.by_plural.items():
            for key in inf.store.index_keys(OWNER_UID, uid):
                self.enqueue((plural, key))

    def _enqueue_owners(self, *objs: dict) -> None:
        for obj in objs:
            for ref in _refs(obj):
                found = self._cached_by_uid(ref, obj)
                if found is not None:
                    self.enqueue(found[0])

    # -- the graph, read from the caches ----------------------------------------------

    def _resource(self, api_version: str, kind: str) -> Resource | None:
        try:
            return self.client.resources.for_object({"apiVersion": api_version, "kind": kind})
        except errors.NotFound:
            return None

    def _cached_by_uid(self, ref: dict, dependent: dict) -> tuple[tuple, dict] | None:
        """The owner `ref` names, if the cache holds it: ((plural, key), object)."""
        r = self._resource(ref.get("apiVersion", ""), ref.get("kind", ""))
        if r is None or _name(r) not in self.by_plural:
            return None
        inf = self.by_plural[_name(r)][1]
        ns = dependent["metadata"].get("namespace", "") if r.namespaced else ""
        for obj in inf.store.by_index(UID, ref.get("uid", "")):
            md = obj["metadata"]
            if md.get("name") == ref.get("name") and md.get("namespace", "") == ns:
                return (_name(r), key_of(obj)), obj
        return None

    def dependents(self, owner: dict) -> list[tuple[str, dict, dict]]:
        """(plural, dependent, its reference to `owner`) for every cached dependent."""
        uid = owner["metadata"].get("uid")
        out = []
        for plural, (_, inf) in self.by_plural.items():
            for dep in inf.store.by_index(OWNER_UID, uid):
                for ref in _refs(dep):
                    if ref.get("uid") == uid:
                        out.append((plural, dep, ref))
                        break
        return out

    # -- reconcile ----------------------------------------------------------------------

    async def reconcile(self, key) -> None:
        plural, obj_key = key
        entry = self.by_plural.get(plural)
        if entry is None:
            return
        r, inf = entry
        obj = inf.store.get(obj_key)
        if obj is None:
            return  # gone: its dependents were enqueued when it went
        if _deleting(obj):
            fins = _finalizers(obj)
            if ORPHAN in fins:
                await self._orphan_dependents(r, obj)
            if FOREGROUND in fins:
                await self._process_deleting_dependents(r, obj)
            return  # otherwise on its way out: nothing to collect
        if _refs(obj):
            await self._attempt_to_delete(r, obj)

    async def _attempt_to_delete(self, r: Resource, cached: dict) -> None:
        # The cheap pass: every owner present in the cache and none deleting in
        # foreground means there is nothing to do, without a request.
        if all(self._cached_solid(ref, cached) for ref in _refs(cached)):
            return
        namespace, name = split_key(key_of(cached))
        try:
            latest = await self.client.get(r, name, namespace=namespace or None)
        except errors.NotFound:
            return
        if latest["metadata"].get("uid") != cached["metadata"].get("uid"):
            return  # a new object took the name; its own events bring it here
        refs = _refs(latest)
        if not refs or _deleting(latest):
            return
        solid, dangling, waiting = [], [], []
        for ref in refs:
            state = await self._classify(latest, ref)
            {SOLID: solid, DANGLING: dangling, WAITING: waiting}[state].append(ref)
        md = latest["metadata"]
        if solid:
            if not dangling and not waiting:
                return
            # A live owner keeps the object; references to the gone and to owners
            # waiting for their dependents go (or those owners would wait forever).
            log.info("%s: removing references to %s from %s %s", self.name,
                     [x["uid"] for x in dangling + waiting], r.plural, key_of(latest))
            await self.client.patch(r, md["name"], {"metadata": {
                "ownerReferences": [{"$patch": "delete", "uid": x["uid"]} for x in dangling + waiting],
                "uid": md["uid"]}}, namespace=namespace or None, patch_type="strategic")
            return
        deps = self.dependents(latest)
        if waiting and deps:
            if any(self._waits_for_dependents(dep) for _, dep, _ in deps):
                # A cycle of foreground deletions would wait forever: stop this object
                # blocking its owners (Kubernetes' circle detection, false positives and all).
                unblock = [{"uid": x["uid"], "blockOwnerDeletion": False}
                           for x in waiting if x.get("blockOwnerDeletion")]
                if unblock:
                    await self.client.patch(r, md["name"], {"metadata": {
                        "ownerReferences": unblock, "uid": md["uid"]}},
                        namespace=namespace or None, patch_type="strategic")
            policy = "Foreground"
        elif ORPHAN in _finalizers(latest):
            policy = "Orphan"
        elif FOREGROUND in _finalizers(latest):
            policy = "Foreground"
        else:
            policy = "Background"
        log.info("%s: deleting %s %s (owners gone), propagation %s", self.name, r.plural,
                 key_of(latest), policy)
        try:
            await self.client.delete(r, md["name"], namespace=namespace or None,
                                     propagation_policy=policy, preconditions={"uid": md["uid"]})
        except errors.NotFound:
            pass

    def _cached_solid(self, ref: dict, dependent: dict) -> bool:
        found = self._cached_by_uid(ref, dependent)
        return found is not None and not self._waits_for_dependents(found[1])

    @staticmethod
    def _waits_for_dependents(owner: dict) -> bool:
        return _deleting(owner) and FOREGROUND in _finalizers(owner)

    async def _classify(self, dependent: dict, ref: dict) -> str:
        """SOLID, DANGLING or WAITING, from a live GET of the owner `ref` names."""
        uid = ref.get("uid", "")
        if uid in self._absent:
            self._absent.move_to_end(uid)
            return DANGLING
        r = self._resource(ref.get("apiVersion", ""), ref.get("kind", ""))
        if r is None:
            return SOLID  # a kind this server does not know: never assume it is gone
        dep_ns = dependent["metadata"].get("namespace", "")
        if r.namespaced and not dep_ns:
            if self.recorder is not None:
                self.recorder.event(dependent, WARNING, "OwnerRefInvalidNamespace",
                                    f"ownerRef {ref} does not resolve to a cluster-scoped owner")
            return SOLID
        try:
            owner = await self.client.get(r, ref.get("name", ""), namespace=dep_ns if r.namespaced else None)
        except errors.NotFound:
            owner = None
        if owner is None or owner["metadata"].get("uid") != uid:
            self._absent[uid] = None
            while len(self._absent) > self._absent_size:
                self._absent.popitem(last=False)
            return DANGLING
        return WAITING if self._waits_for_dependents(owner) else SOLID

    async def _orphan_dependents(self, r: Resource, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for plural, dep, _ in self.dependents(owner):
            dr = self.by_plural[plural][0]
            ns, name = split_key(key_of(dep))
            log.info("%s: orphaning %s %s (owner %s %s)", self.name, plural, key_of(dep),
                     r.plural, key_of(owner))
            try:
                await self.client.patch(dr, name, {"metadata": {
                    "ownerReferences": [{"$patch": "delete", "uid": uid}],
                    "uid": dep["metadata"]["uid"]}}, namespace=ns or None, patch_type="strategic")
            except errors.NotFound:
                pass
        await self._remove_finalizer(r, owner, ORPHAN)

    async def _process_deleting_dependents(self, r: Resource, owner: dict) -> None:
        deps = self.dependents(owner)
        if not any(ref.get("blockOwnerDeletion") for _, _, ref in deps):
            await self._remove_finalizer(r, owner, FOREGROUND)
            return
        for p, dep, _ in deps:
            # A dependent already on its way out needs nothing more, unless it is itself
            # waiting in foreground, which its own key takes care of.
            if not _deleting(dep):
                self.enqueue((p, key_of(dep)))

    async def _remove_finalizer(self, r: Resource, cached: dict, finalizer: str) -> None:
        """Remove `finalizer` from the live object, with its resourceVersion as a
        precondition (Conflict -> requeued, read again)."""
        ns, name = split_key(key_of(cached))
        try:
            live = await self.client.get(r, name, namespace=ns or None)
        except errors.NotFound:
            return
        md = live["metadata"]
        if md.get("uid") != cached["metadata"]["uid"] or finalizer not in (md.get("finalizers") or ()):
            return
        log.info("%s: removing finalizer %s from %s %s", self.name, finalizer, r.plural, key_of(live))
        try:
            await self.client.patch(r, name, {"metadata": {
                "finalizers": [f for f in md["finalizers"] if f != finalizer],
                "resourceVersion": md["resourceVersion"]}}, namespace=ns or None)
        except errors.NotFound:
            pass
