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
from dataclasses import dataclass, field
from typing import Callable

import orjson
from prometheus_client import Counter
from sortedcontainers import SortedList

from apiserver import registry
from apiserver.storage import Compacted, Store
from machinery.metrics import REGISTRY

log = logging.getLogger("minik8s.apiserver.cache")

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


@dataclass(slots=True)
class Entry:
    """One object as the cache holds it: decoded, and serialized once for output."""
    key: str
    obj: dict
    raw: bytes
    revision: int
    lines: dict | None = None

    def event_line(self, kind: str) -> bytes:
        """The watch line for this object, built once however many watchers send it."""
        if self.lines is None:
            self.lines = {}
        line = self.lines.get(kind)
        if line is None:
            line = self.lines[kind] = b'{"type":"' + kind.encode() + b'","object":' + self.raw + b"}\n"
        return line


def decode(key: str, value: bytes, revision: int) -> Entry:
    obj = orjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return Entry(key, obj, orjson.dumps(obj), revision)


Filter = Callable[[dict], bool]


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
        was = old is not None and self.match(old.obj)
        now = new is not None and self.match(new.obj)
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

    def __init__(self, history: int):
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
        self.buckets: dict[str, Bucket] = {r.root: Bucket(history) for r in registry.RESOURCES}
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
            for key in sorted(bucket.objects):
                entry = bucket.objects[key]
                if match(entry.obj):
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
                    bucket.objects[kv.key] = decode(kv.key, kv.value, kv.mod_revision)
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
            new = decode(ev.key, old.raw, ev.revision)
            bucket.apply("DELETE", ev.key, old, new)
        else:
            bucket.apply("PUT", ev.key, old, decode(ev.key, ev.value, ev.revision))

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
