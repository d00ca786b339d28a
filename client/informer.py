"""Informers: a local, indexed, eventually consistent copy of one kind, plus change
notifications (client-go tools/cache: Reflector, Indexer, SharedIndexInformer).

The contract, for an `Informer` on (resource, namespace, selectors):
- The cache is eventually consistent with the server: after the server stops
  changing, the cache ends equal to a fresh LIST (same keys, same resourceVersions),
  whatever happened in between (dropped watches, API server restarts, compaction).
- It never goes back in time: every LIST is a consistent read, and a watch only
  delivers changes after the position the cache reached.
- Handlers are called after the cache has applied the change they report, so a
  handler that reads the cache sees at least that state.
- Per object, notifications arrive in the order the server made the changes:
  add, then updates, then delete; an object is never added twice without a delete
  in between. There is no ordering promise across objects.
- Changes missed while disconnected are folded into one step at relist: an object
  that changed is one update (from the cached to the new state), one that vanished
  is one delete carrying its last cached state (which may be stale; client-go wraps
  it as DeletedFinalStateUnknown, here the handler gets the object itself); one
  deleted and re-created under the same name (a new uid) is a delete then an add.
  Objects unchanged across a relist (same resourceVersion) produce no notification.
- `has_synced()` turns true once the first LIST has been applied and its adds
  delivered; it never turns false again.
- Cached objects are shared and read-only: copy before changing one. Equal parts of
  them are one object (`Interner`: short strings, and dicts and lists below an
  object's `metadata`/`spec`/`status`), within one object, across objects and across
  an object's versions; so a change made to one cached object could show in many.
- With a `transform` (client-go's SetTransform), every object the server sends, a
  deleted one's last state included, passes through it once before it is cached or
  handed to a handler; the cache and the handlers see only what it returns.
- Handlers run on the informer's task and must not block: turn the object into a key
  and put it on a work queue. An exception in a handler is logged and does not stop
  the informer or the other handlers.

Concurrency: one asyncio loop. The reflector is one task; every cache mutation and
its notifications happen in one synchronous step, so other tasks see the cache either
before or after a change, never halfway. Not thread-safe.
"""
from __future__ import annotations

import asyncio
import builtins
import logging
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import orjson

from client.clock import Clock, RealClock
from client.rest import ALL, Client, Resource
from client.watch import Event, Watch
from machinery.errors import Gone

log = logging.getLogger("minik8s.client.informer")

IndexFunc = Callable[[dict[str, Any]], Iterable[str]]

NAMESPACE = "namespace"
NODE_NAME = "spec.nodeName"
OWNER_UID = "ownerUID"
LABEL = "label"  # values are "key=value"


def key_of(obj: dict[str, Any]) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects (MetaNamespaceKeyFunc)."""
    md = obj["metadata"]
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]


def split_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.rpartition("/")
    return namespace, name


def _namespace(obj: dict[str, Any]) -> list[str]:
    ns = obj["metadata"].get("namespace")
    return [ns] if ns else []


def _node_name(obj: dict[str, Any]) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def _owner_uid(obj: dict[str, Any]) -> list[str]:
    return [r["uid"] for r in obj["metadata"].get("ownerReferences") or () if r.get("uid")]


def _label(obj: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in (obj["metadata"].get("labels") or {}).items()]


DEFAULT_INDEXERS: dict[str, IndexFunc] = {NAMESPACE: _namespace, NODE_NAME: _node_name,
                                          OWNER_UID: _owner_uid, LABEL: _label}


_SHARED_MAX = 64  # longer strings (annotations, certificates) are rarely repeated
# orjson sizes a dict of 9 to 16 keys for more than it holds (352 bytes where a dict
# built key by key takes 272, 632 for 464): those an object keeps are rebuilt.
_COMPACT = 8

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def strip_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A transform (client-go's TransformFunc) that drops `metadata.managedFields`, in
    place: kube-controller-manager's informers do the same (`informers.WithTransform`)
    because no controller reads them, and they are 40 % of a pod's JSON. A controller
    that writes a cached object back loses nothing: a write without managedFields keeps
    the stored ones."""
    md = obj.get("metadata")
    if md is not None:
        md.pop("managedFields", None)
    return obj


class Interner:
    """Equal values are stored once: every string value up to 64 characters
    (`sys.intern`; keys already are, orjson caches them), and every dict or list two
    levels or more below an object's top (hash-consing), so the 5,000 pods of a
    Deployment hold one `containers[0].resources`, one tolerations list, one set of
    volume sources and one ownerReference between them, and an update holds only what
    it changed apart from the version it replaces. -> `intern(obj)` rewrites `obj` in
    place to point at the shared copies and returns it.

    Why two levels down: an object's top and its `metadata`/`spec`/`status` are unique
    to it (a name, a uid, a nodeName), so giving them a table entry would cost memory
    and save none.

    Measured on 5,000 fake-kubelet pods of 30 Deployments (4.4 KiB of JSON each, 1.8 of
    it managedFields; `bench/informer.py --memory`, cache and indexes): 19.0 KiB a pod
    with only strings interned (4.4x the JSON), 8.4 KiB with values shared (1.9x), 5.0
    KiB with managedFields stripped too (1.1x; 1.9x the stripped object's JSON). The
    CPU: +19 to +33 us a pod at sync (57 -> 76 to 90 us; decoding it took 120 us on
    the same loaded machine), and less for an update (82 -> 57 to 63 us), whose
    unchanged parts are found in the table and not walked.

    Sharing is safe only because cached objects are read-only: a change to a shared
    dict would show in every object holding it. The table holds each shared value
    until no object does; `sweep()` drops those, and runs by itself when the table has
    grown by half since the last sweep, so the table stays proportional to the live
    cache."""

    def __init__(self) -> None:
        # hash of a value's JSON -> the one shared copy. Two values whose JSON hash
        # alike are shared only if they are also equal: a hash collision (one in
        # 2**64) between unequal values costs a missed share, never a wrong value.
        # The JSON, not `==`, tells 1 from 1.0 and true.
        self._table: dict[int, Any] = {}
        self._sweep_at = 4096

    def __len__(self) -> int:
        return len(self._table)

    def intern(self, obj: dict[str, Any]) -> dict[str, Any]:
        intern, share = sys.intern, self._share
        for k, v in obj.items():
            t = type(v)
            if t is dict:
                if len(v) > _COMPACT:
                    v = obj[k] = dict(zip(v, v.values()))
                for k2, v2 in v.items():
                    t2 = type(v2)
                    if t2 is dict or t2 is list:
                        v[k2] = share(v2)
                    elif t2 is str and len(v2) <= _SHARED_MAX:
                        v[k2] = intern(v2)
            elif t is list:
                for i, v2 in enumerate(v):
                    t2 = type(v2)
                    if t2 is dict or t2 is list:
                        v[i] = share(v2)
                    elif t2 is str and len(v2) <= _SHARED_MAX:
                        v[i] = intern(v2)
            elif t is str and len(v) <= _SHARED_MAX:
                obj[k] = intern(v)
        if len(self._table) >= self._sweep_at:
            self.sweep()
        return obj

    def _share(self, o: Any) -> Any:
        # Serializing is C and cheap; the walk below runs only for values not seen
        # before, and the few unique ones (a pod's IPs, its token volume) are small.
        try:
            h = hash(orjson.dumps(o))
        except TypeError:  # not JSON (a transform's own value): kept as it is
            return o
        table = self._table
        got = table.get(h)
        if got is not None:
            return got if got == o else o
        intern, share = sys.intern, self._share
        if type(o) is dict:
            if len(o) > _COMPACT:
                o = dict(zip(o, o.values()))
            for k, v in o.items():
                t = type(v)
                if t is str:
                    if len(v) <= _SHARED_MAX:
                        o[k] = intern(v)
                elif t is dict or t is list:
                    o[k] = share(v)
        else:
            for i, v in enumerate(o):
                t = type(v)
                if t is str:
                    if len(v) <= _SHARED_MAX:
                        o[i] = intern(v)
                elif t is dict or t is list:
                    o[i] = share(v)
        table[h] = o
        return o

    def sweep(self) -> int:
        """Forget the shared values no cached object holds any more. -> how many."""
        table, refs = self._table, sys.getrefcount
        dropped = 0
        # Newest first: a value enters the table after its parts do, so a value
        # dropped here has released its parts by the time the loop reaches them.
        for h in reversed(list(table)):
            if refs(table[h]) <= 2:  # the table's reference and getrefcount's argument
                del table[h]
                dropped += 1
        self._sweep_at = max(4096, len(table) * 3 // 2)
        return dropped


class Indexer:
    """Objects by key, plus named indexes: index name -> value -> keys."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None):
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self.add_indexers(DEFAULT_INDEXERS if indexers is None else indexers)

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        """Register more indexes; existing objects are indexed at once."""
        for name, fn in indexers.items():
            self._indexers[name] = fn
            index = self._indices[name] = {}
            for key, obj in self._items.items():
                for value in fn(obj):
                    index.setdefault(value, set()).add(key)

    def set(self, key: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                index.setdefault(value, set()).add(key)
        return old

    def delete(self, key: str) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def get(self, key: str) -> dict[str, Any] | None:
        return self._items.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def list(self) -> builtins.list[dict[str, Any]]:
        return list(self._items.values())

    def index_keys(self, index: str, value: str) -> builtins.list[str]:
        return sorted(self._indices[index].get(value, ()))

    def by_index(self, index: str, value: str) -> builtins.list[dict[str, Any]]:
        return [self._items[k] for k in self.index_keys(index, value)]

    def index_values(self, index: str) -> builtins.list[str]:
        return sorted(self._indices[index])


@dataclass(eq=False)
class Handler:
    on_add: Callable[[dict[str, Any]], None] | None = None
    on_update: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    on_delete: Callable[[dict[str, Any]], None] | None = None


class Informer:
    def __init__(self, client: Client, resource: str | Resource, *, namespace: str = ALL,
                 label_selector: str | None = None, field_selector: str | None = None,
                 indexers: dict[str, IndexFunc] | None = None, clock: Clock | None = None,
                 backoff: float = 0.1, max_backoff: float = 5.0, transform: Transform | None = None):
        """`transform` gets each freshly decoded object, may change it in place, and
        returns what to cache (e.g. `strip_managed_fields`)."""
        self.client = client
        self.resource = client.resources.get(resource)
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self.store = Indexer(indexers)
        self.transform = transform
        self.interner = Interner()
        self._deleted = 0  # objects deleted since the interner's last sweep
        self.clock = clock or RealClock()
        self.backoff, self.max_backoff = backoff, max_backoff
        self.resource_version = ""  # of the last list, event or bookmark applied
        self.relists = 0            # lists after the first: how often history was lost
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- handlers -------------------------------------------------------------------

    def add_handler(self, *, on_add: Callable[[dict[str, Any]], None] | None = None,
                    on_update: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                    on_delete: Callable[[dict[str, Any]], None] | None = None) -> Handler:
        """Subscribe. A handler added after objects are cached first gets an add for
        each of them, so every handler sees the same story."""
        h = Handler(on_add, on_update, on_delete)
        self._handlers.append(h)
        if h.on_add:
            for obj in self.store.list():
                self._call(h.on_add, obj)
        return h

    def remove_handler(self, h: Handler) -> None:
        self._handlers.remove(h)

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        self.store.add_indexers(indexers)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one bad handler must not starve the others
            log.exception("informer %s: handler %r failed", self.resource.plural, fn)

    def _notify(self, what: str, *args: Any) -> None:
        for h in tuple(self._handlers):
            fn = getattr(h, what)
            if fn is not None:
                self._call(fn, *args)

    # -- what the reflector feeds in -------------------------------------------------

    def replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """Apply a full LIST: adds, updates for what changed, deletes for what vanished."""
        transform, intern = self.transform, self.interner.intern
        if transform is not None:
            items = [transform(o) for o in items]
        fresh = {key_of(o): intern(o) for o in items}
        gone = [k for k in self.store.keys() if k not in fresh]
        for key in gone:
            self._notify("on_delete", self.store.delete(key))
        for key, obj in fresh.items():
            old = self.store.get(key)
            if old is not None and old["metadata"].get("uid") != obj["metadata"].get("uid"):
                self._notify("on_delete", self.store.delete(key))
                old = None
            self.store.set(key, obj)
            if old is None:
                self._notify("on_add", obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._notify("on_update", old, obj)
        self.resource_version = resource_version
        self._forgot(len(gone))
        self._synced.set()

    def apply(self, event: Event) -> None:
        obj = event.object
        self.resource_version = obj["metadata"]["resourceVersion"]
        if event.type == "BOOKMARK":
            return
        if self.transform is not None:
            obj = self.transform(obj)
        key = key_of(obj)
        if event.type == "DELETED":
            if self.store.delete(key) is not None:
                self._forgot(1)
                self._notify("on_delete", obj)
            return
        old = self.store.set(key, self.interner.intern(obj))
        if old is None:
            self._notify("on_add", obj)
        else:
            self._notify("on_update", old, obj)

    def _forgot(self, deleted: int) -> None:
        """The interner sweeps itself as it grows; deletes alone do not grow it, so
        after as many deletes as half the cache, sweep: what the deleted objects held
        alone is freed, at a cost proportional to those deletes."""
        self._deleted += deleted
        if self._deleted * 2 > len(self.store) + 64:
            self.interner.sweep()
            self._deleted = 0

    # -- running --------------------------------------------------------------------

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
            return True
        except TimeoutError:
            return False

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.resource.plural}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run(self) -> None:
        """The reflector: list, then watch from the list's resourceVersion; the watch
        resumes itself across drops; Gone (history compacted) means list again. A
        failed list or watch is tried again after a jittered backoff that grows until
        a watch delivers an event (a successful LIST alone does not reset it)."""
        failures = 0
        while True:
            # Only a watch that delivered something resets the backoff: a LIST that
            # succeeds before a WATCH that is refused (RBAC granting list but not watch)
            # must not make a tight relist loop.
            progressed = False
            try:
                listed = await self.client.list(
                    self.resource, namespace=self.namespace, label_selector=self.label_selector,
                    field_selector=self.field_selector)
                if self.has_synced():
                    self.relists += 1
                self.replace(listed["items"], listed["metadata"]["resourceVersion"])
                watch = Watch(self.client, self.resource, namespace=self.namespace,
                              label_selector=self.label_selector, field_selector=self.field_selector,
                              resource_version=self.resource_version, clock=self.clock)
                async for event in watch:
                    self.apply(event)
                    progressed = True
            except Gone as err:
                log.info("informer %s: %s; relisting", self.resource.plural, err)
                if progressed:
                    failures = 0
                    continue
                failures += 1  # a watch that is Gone at once, again and again, must not spin
                await self.clock.sleep(min(self.backoff * 2 ** (failures - 1), self.max_backoff)
                                       * random.uniform(0.5, 1.0))
            except Exception as exc:  # noqa: BLE001 - keep reflecting; the server comes back
                failures = 1 if progressed else failures + 1
                delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
                log.warning("informer %s: list/watch failed (%s); retrying in %.1fs",
                            self.resource.plural, exc, delay)
                await self.clock.sleep(delay * random.uniform(0.5, 1.0))


class SharedInformerFactory:
    """One informer per (resource, namespace, selectors) in a process, however many
    controllers ask for it: they share its cache and its single watch."""

    def __init__(self, client: Client, *, namespace: str = ALL, transform: Transform | None = None):
        """`transform`: every informer's (client-go's `informers.WithTransform`)."""
        self.client = client
        self.namespace = namespace
        self.transform = transform
        self._informers: dict[tuple[Any, ...], Informer] = {}

    def informer(self, resource: str | Resource, *, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None) -> Informer:
        r = self.client.resources.get(resource)
        ns = self.namespace if namespace is None else namespace
        key = (r.group, r.plural, ns, label_selector or "", field_selector or "")
        if key not in self._informers:
            self._informers[key] = Informer(self.client, r, namespace=ns,
                                            label_selector=label_selector,
                                            field_selector=field_selector, transform=self.transform)
        return self._informers[key]

    def start(self) -> None:
        """Start every informer not yet running (call again after asking for more)."""
        for inf in self._informers.values():
            inf.start()

    async def wait_for_cache_sync(self, timeout: float | None = None) -> bool:
        return await wait_for_cache_sync(*self._informers.values(), timeout=timeout)

    async def stop(self) -> None:
        for inf in self._informers.values():
            await inf.stop()


async def wait_for_cache_sync(*informers: Informer, timeout: float | None = None) -> bool:
    try:
        async with asyncio.timeout(timeout):
            for inf in informers:
                await inf._synced.wait()
        return True
    except TimeoutError:
        return False
