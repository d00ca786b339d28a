"""The watch cache: one etcd watch on /registry/ feeding an in-memory copy of every object.

Guarantees
- `revision` is the etcd revision the cache reflects: every write with a revision
  <= `revision` has been applied, in order. All writes the server makes live under
  /registry/, so once `revision` reaches etcd's current revision the cache is exact;
  `wait_for(rev)` is how a consistent LIST gets read-your-writes.
- Each resource keeps a bounded history of recent events. A watch from a revision the
  history still covers replays from it and then goes live with no gap: subscribing
  and replaying happen in one step of the event loop, with no await between them.
  A watch from an older revision is not served here (see `covers`); the caller falls
  back to a direct etcd watch, which reports compaction as 410.
- Watchers never block the dispatcher: each has its own queue; one that falls more
  than `max_backlog` events behind is closed (the client re-watches from its last
  resourceVersion, as with Kubernetes' cacher).

Memory: an object is held once, as its serialized JSON (`Entry.raw`, immutable),
shared by the store, the event window, LISTs and watchers, with the labels and
selectable fields its selectors read (label sets interned, so pods of one template share
one); no decoded copy is kept (`Entry.obj` decodes on demand). An event in the window
references the entries it is about: the previous version of an object stays alive only
while an event of the window still names it. bench/cache_memory.py measures both.

Buckets: one per storage root (`ResourceType.root`): the built-ins' from the start, and
one for every `/registry/<group>/<plural>/` the first time a key under it is seen, so
custom resources are cached whether or not their kind is registered yet, and a kind
registered later is served from the cache at once.

Concurrency: everything runs on one asyncio loop; the only task that mutates the cache
is `_run`, which applies one etcd batch at a time.
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import sys
import weakref
from dataclasses import dataclass, field
from typing import Callable, Mapping

import orjson
from prometheus_client import Counter
from sortedcontainers import SortedList

from apiserver import registry
from apiserver.storage import Compacted, Store
from machinery.metrics import REGISTRY

log = logging.getLogger("minik8s.apiserver.cache")

# A kind's selectable fields from its object (registry.ResourceType.fields).
Fields = Callable[[dict], Mapping[str, str]]

# The cacher's LIST metrics (k8s.io/apiserver/pkg/storage/cacher/metrics): how many objects
# a LIST read against how many it returned, which is how a test counts a page's work.
_LIST = Counter("apiserver_cache_list", "Number of LIST requests served from watch cache",
                ["resource_prefix", "index"], registry=REGISTRY)
_FETCHED = Counter("apiserver_cache_list_fetched_objects", "Number of objects read from watch cache in the "
                   "course of serving a LIST request", ["resource_prefix", "index"], registry=REGISTRY)
_TERMINATED = Counter("apiserver_terminated_watchers", "Counter of watchers closed due to unresponsiveness",
                      ["resource"], registry=REGISTRY)
_RETURNED = Counter("apiserver_cache_list_returned_objects", "Number of objects returned for a LIST request "
                    "from watch cache", ["resource_prefix"], registry=REGISTRY)


def list_metrics(resource: registry.ResourceType, fetched: int, returned: int) -> None:
    prefix = "/" + resource.root[len("/registry/"):].rstrip("/")
    _LIST.labels(prefix, "").inc()
    _FETCHED.labels(prefix, "").inc(fetched)
    _RETURNED.labels(prefix).inc(returned)


class Labels(dict):
    """A label set shared, read-only, by every entry whose labels are the same (a
    Deployment's pods all carry one): a subclass only so the intern table can hold it
    weakly."""
    __slots__ = ("__weakref__",)


_LABELS: weakref.WeakValueDictionary[tuple, Labels] = weakref.WeakValueDictionary()
_NO_LABELS = Labels()


class _Layout:
    """The field names one extractor produces, in order, shared by every entry it made:
    an entry keeps only the values. The extractor is held weakly: a custom resource's
    is replaced whenever its CRD changes, and the old one must not live on here."""
    __slots__ = ("extract", "index")

    def __init__(self, extract: Fields, names: tuple[str, ...]):
        self.extract = weakref.ref(extract)
        self.index = {n: i for i, n in enumerate(names)}


_LAYOUTS: weakref.WeakKeyDictionary[Fields, dict[tuple[str, ...], _Layout]] = weakref.WeakKeyDictionary()


def _labels(obj: dict) -> Labels:
    found = (obj.get("metadata") or {}).get("labels")
    if not found or not isinstance(found, dict):
        return _NO_LABELS
    items = tuple(found.items())
    try:
        shared = _LABELS.get(items)
    except TypeError:  # not hashable: not a valid label set, compare as given
        return Labels(found)
    if shared is None:
        shared = _LABELS[items] = Labels(found)
    return shared


def _dumps(obj: dict) -> bytes:
    """`obj` as JSON in a bytes object of its own size: orjson leaves its output in the
    buffer it wrote into (8 KiB for a 2.7 KiB pod), slack a cache of every object would
    keep; the copy costs a seventh of the encoding."""
    return bytes(memoryview(orjson.dumps(obj)))


def _intern(v: object) -> object:
    return sys.intern(v) if type(v) is str else v


class FieldView:
    """An entry's selectable fields as the read-only mapping a field selector reads."""
    __slots__ = ("_layout", "_values")

    def __init__(self, layout: _Layout, values: tuple):
        self._layout, self._values = layout.index, values

    def get(self, name: str, default: object = None) -> object:
        i = self._layout.get(name)
        return default if i is None else self._values[i]

    def __getitem__(self, name: str) -> object:
        return self._values[self._layout[name]]

    def __contains__(self, name: object) -> bool:
        return name in self._layout


class Entry:
    """One object as the cache holds it: its JSON (with its resourceVersion), serialized
    once and shared, immutable, by the store, the event window, every LIST and every
    watcher; plus what selectors read, taken out when it is stored (Kubernetes'
    storeElement: the object with its labels and fields). A decoded copy is made only
    on demand (`obj`, a private dict each call): a decoded object costs Python six to
    seven times its JSON (bench/cache_memory.py)."""
    __slots__ = ("key", "raw", "revision", "api_version", "labels", "_layout", "_values")

    def __init__(self, key: str, raw: bytes, revision: int, api_version: str = "",
                 labels: Labels = _NO_LABELS):
        self.key = key
        self.raw = raw
        self.revision = revision
        self.api_version = api_version
        self.labels = labels
        self._layout: _Layout | None = None
        self._values: tuple = ()

    @classmethod
    def of(cls, key: str, obj: dict, revision: int, extract: Fields | None = None) -> Entry:
        """An entry for a decoded object (as it is to be served: resourceVersion set)."""
        e = cls(key, _dumps(obj), revision, sys.intern(str(obj.get("apiVersion") or "")), _labels(obj))
        if extract is not None:
            e._extract(extract, obj)
        return e

    @property
    def obj(self) -> dict:
        """The object, decoded: a private copy the caller may change."""
        return orjson.loads(self.raw)

    def fields(self, extract: Fields) -> FieldView:
        """The selectable fields `extract` takes from this object: kept from when it was
        stored if the same extractor took them (a kind's row is fixed; a custom
        resource's changes with its CRD's selectableFields), else taken now."""
        layout = self._layout
        if layout is None or layout.extract() is not extract:
            layout = self._extract(extract, self.obj)
        return FieldView(layout, self._values)

    def _extract(self, extract: Fields, obj: dict) -> _Layout:
        found = extract(obj)
        names = tuple(found)
        layouts = _LAYOUTS.get(extract)
        if layouts is None:
            layouts = _LAYOUTS[extract] = {}
        layout = layouts.get(names)
        if layout is None:
            layout = layouts[names] = _Layout(extract, names)
        self._layout, self._values = layout, tuple(_intern(v) for v in found.values())
        return layout

    def at(self, revision: int) -> Entry:
        """This object as of a later revision (a deletion's last state)."""
        obj = self.obj
        obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
        e = Entry(self.key, _dumps(obj), revision, self.api_version, self.labels)
        e._layout, e._values = self._layout, self._values
        return e


def decode(key: str, value: bytes, revision: int, extract: Fields | None = None) -> Entry:
    """A stored value as an entry; `extract`, if given, takes its selectable fields now."""
    obj = orjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return Entry.of(key, obj, revision, extract)


# Whether a watcher wants an object (its selector, on the entry's labels and fields).
Filter = Callable[[Entry], bool]


@dataclass(eq=False)
class Watcher:
    match: Filter
    bookmarks: bool
    max_backlog: int
    queue: collections.deque = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    resource: str = ""  # for the terminated-watchers metric

    def push(self, item) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.max_backlog:
            # Too slow (kube-apiserver's "Forcing watcher close due to unresponsiveness"):
            # what it has not taken is dropped, so a client that stopped reading holds no
            # more than max_backlog events, and its stream ends once what is already on
            # its connection is read; it re-watches from its last resourceVersion (a
            # replay, or 410 Gone once history has moved past it).
            self.closed = True
            self.queue.clear()
            _TERMINATED.labels(self.resource).inc()
            log.info("Forcing %s watcher close due to unresponsiveness: %d events behind",
                     self.resource or "a", self.max_backlog)
        else:
            self.queue.append(item)
        self.wakeup.set()

    def offer(self, kind: str, old: Entry | None, new: Entry | None) -> None:
        """Translate a change into what this watcher sees through its filter."""
        was = old is not None and self.match(old)
        now = new is not None and self.match(new)
        if kind == "DELETE":
            if was:
                self.push(("DELETED", new))
        elif now:
            self.push(("MODIFIED" if was else "ADDED", new))
        elif was:
            self.push(("DELETED", new))  # it stopped matching the selector

    async def next_batch(self, limit: int = 1000) -> list:
        """What is queued, `limit` items at most: (type, Entry) and ("BOOKMARK", revision)
        items, in order. Empty once closed and drained. Taking many at once lets a watch
        send one chunk per wakeup instead of one per event; the limit bounds the chunk
        (a slow client's connection holds one chunk, not its whole backlog)."""
        while not self.queue:
            if self.closed:
                return []
            self.wakeup.clear()
            await self.wakeup.wait()
        if len(self.queue) <= limit:
            batch = list(self.queue)
            self.queue.clear()
        else:
            batch = [self.queue.popleft() for _ in range(limit)]
        return batch


class Bucket:
    """The objects of one resource, its recent history and its watchers."""

    def __init__(self, history: int, extract: Fields | None = None):
        # The kind's field extractor, as last served (a custom resource's bucket learns
        # it when its kind is first read): entries take their fields with it when stored.
        self.extract = extract
        self.objects: dict[str, Entry] = {}
        # The keys in order: a namespace's objects are one range of it (keys are
        # <root><namespace>/<name>), so a page of a namespace costs O(log n + page).
        self.keys: SortedList = SortedList()
        self.history: collections.deque = collections.deque(maxlen=history)
        self.history_revs: collections.deque = collections.deque(maxlen=history)
        self.oldest = 0  # history is complete for every revision > oldest
        self.watchers: set[Watcher] = set()

    def apply(self, kind: str, key: str, old: Entry | None, new: Entry | None) -> None:
        if kind == "DELETE":
            if self.objects.pop(key, None) is not None:
                self.keys.remove(key)
        else:
            if key not in self.objects:
                self.keys.add(key)
            self.objects[key] = new
        if len(self.history) == self.history.maxlen:
            self.oldest = self.history_revs[0]
        self.history.append((kind, old, new))
        self.history_revs.append(new.revision)
        for w in tuple(self.watchers):
            w.offer(kind, old, new)
            if w.closed:
                self.watchers.discard(w)


class WatchCache:
    def __init__(self, store: Store, *, history: int = 10000, max_backlog: int = 10000,
                 bookmark_interval: float = 5.0):
        self.store = store
        self.history = history
        self.max_backlog = max_backlog
        self.bookmark_interval = bookmark_interval
        self.buckets: dict[str, Bucket] = {r.root: Bucket(history, r.fields) for r in registry.RESOURCES}
        self.revision = 0
        self._loaded = 0  # the revision of the last complete list
        self.ready = asyncio.Event()
        # Set while the objects reflect a complete list (cleared during a relist, which
        # fills them without events): a subscriber that takes a snapshot waits for it.
        self.listed = asyncio.Event()
        self._advanced = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="watch-cache"),
                       asyncio.create_task(self._bookmarks(), name="watch-cache-bookmarks")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for b in self.buckets.values():
            for w in b.watchers:
                w.closed = True
                w.wakeup.set()

    # -- reading ------------------------------------------------------------------

    async def wait_for(self, revision: int, timeout: float = 3.0) -> bool:
        if self.revision >= revision:
            return True
        try:
            async with self._advanced:
                await asyncio.wait_for(
                    self._advanced.wait_for(lambda: self.revision >= revision), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def entries(self, resource: registry.ResourceType, namespace: str = "") -> list[Entry]:
        """Current objects of a resource (optionally one namespace), sorted by key."""
        return list(self.scan(resource, namespace))

    def scan(self, resource: registry.ResourceType, namespace: str = "", start: str = ""):
        """The objects of a resource (optionally one namespace) from key `start` on, in
        key order, lazily: a page of n objects reads n (plus the selector's misses)."""
        bucket = self._of(resource)
        lo, hi = self._range(bucket, resource, namespace, start)
        objects = bucket.objects
        for key in bucket.keys.islice(lo, hi):
            yield objects[key]

    def count(self, resource: registry.ResourceType, namespace: str = "", start: str = "") -> int:
        """How many objects `scan` would yield, in O(log n)."""
        bucket = self._of(resource)
        lo, hi = self._range(bucket, resource, namespace, start)
        return max(0, hi - lo)

    @staticmethod
    def _range(bucket: Bucket, resource: registry.ResourceType, namespace: str, start: str) -> tuple[int, int]:
        keys = bucket.keys
        if namespace and resource.namespaced:
            prefix = resource.prefix(namespace)
            # "0" sorts right after "/": every key below prefix[:-1] + "0" has the prefix.
            lo, hi = keys.bisect_left(prefix), keys.bisect_left(prefix[:-1] + "0")
        else:
            lo, hi = 0, len(keys)
        if start:
            lo = max(lo, keys.bisect_left(start))
        return lo, hi

    def _of(self, resource: registry.ResourceType) -> Bucket:
        bucket = self.buckets.get(resource.root)
        if bucket is None:
            bucket = self.buckets[resource.root] = Bucket(self.history)
            bucket.oldest = self._loaded
        bucket.extract = resource.fields
        return bucket

    def get(self, resource: registry.ResourceType, key: str) -> Entry | None:
        return self._of(resource).objects.get(key)

    def covers(self, resource: registry.ResourceType, revision: int) -> bool:
        """Whether a watch starting after `revision` can be served from history."""
        return self.ready.is_set() and revision >= self._of(resource).oldest

    def unchanged_since(self, resource: registry.ResourceType, revision: int, namespace: str = "",
                        start: str = "") -> bool:
        """Whether what `scan(resource, namespace, start)` reads is still what it was at
        `revision`: the history covers it and no event since touched that range. Costs the
        events since `revision`, newest first, not the objects."""
        bucket = self._of(resource)
        if not self.listed.is_set() or not bucket.oldest <= revision <= self.revision:
            return False
        prefix = resource.prefix(namespace) if namespace and resource.namespaced else ""
        for (_, _, new), rev in zip(reversed(bucket.history), reversed(bucket.history_revs)):
            if rev <= revision:
                break
            if new.key >= start and new.key.startswith(prefix):
                return False
        return True

    def watch(self, resource: registry.ResourceType, match: Filter, *, after: int | None,
              bookmarks: bool) -> Watcher:
        """Subscribe. after=None: first an ADDED for every current match (Kubernetes'
        watch without resourceVersion). Else replay history strictly after `after`."""
        bucket = self._of(resource)
        w = Watcher(match, bookmarks, self.max_backlog, resource=resource.plural)
        if after is None:
            objects = bucket.objects
            for key in bucket.keys:
                entry = objects[key]
                if match(entry):
                    w.queue.append(("ADDED", entry))
        else:
            start = bisect.bisect_right(bucket.history_revs, after)
            for i in range(start, len(bucket.history)):
                kind, old, new = bucket.history[i]
                w.offer(kind, old, new)
        bucket.watchers.add(w)
        return w

    def close_watchers(self, resource: registry.ResourceType) -> None:
        """End every watch of `resource`'s objects (its kind stops being served as it
        was: a CRD went or dropped a version); clients re-watch from where they were."""
        bucket = self.buckets.get(resource.root)
        if bucket is not None:
            for w in bucket.watchers:
                w.closed = True
                w.wakeup.set()
            bucket.watchers.clear()

    def unwatch(self, resource: registry.ResourceType, w: Watcher) -> None:
        w.closed = True
        self._of(resource).watchers.discard(w)

    # -- the feed -------------------------------------------------------------------

    async def _load(self) -> int:
        """Read everything under /registry/ at one revision."""
        self.listed.clear()
        for b in self.buckets.values():
            b.objects.clear()
            b.keys.clear()
            b.history.clear()
            b.history_revs.clear()
            for w in b.watchers:
                w.closed = True  # their position is meaningless across a relist
                w.wakeup.set()
            b.watchers.clear()
        revision, start = 0, None
        while True:
            page = await self.store.list("/registry/", revision=revision, limit=1000,
                                         start_key=start)
            revision = page.revision
            for kv in page.items:
                bucket = self._bucket(kv.key)
                if bucket is not None:
                    if kv.key not in bucket.objects:
                        bucket.keys.add(kv.key)
                    bucket.objects[kv.key] = decode(kv.key, kv.value, kv.mod_revision, bucket.extract)
            if not page.more:
                break
            start = page.items[-1].key + "\x00"
        for b in self.buckets.values():
            b.oldest = revision
        self._loaded = revision
        return revision

    def _bucket(self, key: str) -> Bucket | None:
        parts = key[len("/registry/"):].split("/", 2)
        if "." not in parts[0]:
            return self.buckets.get(f"/registry/{parts[0]}/")
        if len(parts) < 3:
            return None
        # /registry/<group>/<plural>/...: a group's resource (custom resources)
        root = f"/registry/{parts[0]}/{parts[1]}/"
        bucket = self.buckets.get(root)
        if bucket is None:
            bucket = self.buckets[root] = Bucket(self.history)
            bucket.oldest = self._loaded
        return bucket

    async def _run(self) -> None:
        while True:
            try:
                revision = await self._load()
                await self._advance(revision)
                self.listed.set()
                self.ready.set()
                # The previous values are the cache's own (every change is applied in
                # order), so etcd need not send them along.
                async for batch in self.store.watch("/registry/", revision + 1, prev_values=False):
                    for ev in batch:
                        self._apply(ev)
                    await self._advance(batch[-1].revision)
            except Compacted:
                log.warning("watch cache fell behind a compaction; relisting")
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep serving; relist after a pause
                log.exception("watch cache feed failed; relisting")
                await asyncio.sleep(1)

    def _apply(self, ev) -> None:
        bucket = self._bucket(ev.key)
        if bucket is None:
            return
        old = bucket.objects.get(ev.key)
        if ev.type == "DELETE":
            if old is None:
                return
            # A deletion is reported with the object's last state at the delete revision.
            bucket.apply("DELETE", ev.key, old, old.at(ev.revision))
        else:
            bucket.apply("PUT", ev.key, old, decode(ev.key, ev.value, ev.revision, bucket.extract))

    async def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        async with self._advanced:
            self._advanced.notify_all()

    async def _bookmarks(self) -> None:
        while True:
            await asyncio.sleep(self.bookmark_interval)
            for b in self.buckets.values():
                for w in b.watchers:
                    if w.bookmarks:
                        w.push(("BOOKMARK", self.revision))
