"""A `Store` in memory with etcd's revision semantics, for tests of the layers above.

It keeps what etcd keeps: every version of every key since the last compaction, under
one global revision counter, so a list at an old revision, a watch that replays from
one, and `Compacted` for one that is gone behave as on etcd (see interface.py for the
contract, which the contract tests run against both stores). What it leaves out is
etcd's: durability, several processes sharing it, network failures.

Concurrency: one asyncio loop. Every method does its reading and writing without an
await in between, so each call is atomic, as one etcd transaction is; a watch
subscribes and replays in one such step, so no write falls between its history and
its live events. Each watch has its own unbounded queue: a slow reader delays only
itself.
"""
from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field
from collections.abc import AsyncIterator

from apiserver.storage.interface import (Batch, Compacted, Event, KeyValue, ListResult,
                                         StorageError, TooLarge, Unavailable, run_compactor)

# etcd's default --max-request-bytes (1.5 MiB); a put of key + value beyond it fails.
MAX_REQUEST_BYTES = 1536 * 1024


@dataclass(slots=True)
class _Version:
    revision: int
    value: bytes | None  # None: deleted at this revision
    create_revision: int


@dataclass(eq=False)
class _Watch:
    prefix: str
    prev_values: bool
    queue: list[Event] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    def __init__(self, *, max_request_bytes: int = MAX_REQUEST_BYTES):
        self._max = max_request_bytes
        self._revision = 1  # as a new etcd's
        self._compacted = 0  # history before this revision is gone
        self._versions: dict[str, list[_Version]] = {}  # per key, oldest first
        self._keys: list[str] = []  # every key with versions, sorted
        self._log: list[Event] = []  # every change since the compaction, in order
        self._watches: set[_Watch] = set()
        self._open = True

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        for w in self._watches:
            w.wakeup.set()

    # -- reads --------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        return self._at(key, self._revision)

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0,
                   start_key: str | None = None) -> ListResult:
        self._check_open()
        if start_key is not None and not start_key.startswith(prefix):
            raise ValueError(f"start_key {start_key!r} is not under {prefix!r}")
        revision = revision or self._revision
        if revision > self._revision:
            raise StorageError("mvcc: required revision is a future revision")
        if revision < self._compacted:
            raise Compacted(self._compacted, self._revision)
        items: list[KeyValue] = []
        i = bisect.bisect_left(self._keys, start_key or prefix)
        while i < len(self._keys) and self._keys[i].startswith(prefix):
            kv = self._at(self._keys[i], revision)
            i += 1
            if kv is None:
                continue
            if limit and len(items) == limit:
                return ListResult(items, revision, True)
            items.append(kv)
        return ListResult(items, revision, False)

    async def count(self, prefix: str) -> int:
        return len((await self.list(prefix)).items)

    async def current_revision(self) -> int:
        self._check_open()
        return self._revision

    # -- writes -------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> tuple[bool, int | KeyValue | None]:
        self._check_open()
        current = self._at(key, self._revision)
        if current is not None:
            return False, current
        return True, self._put(key, value, None)

    async def update(self, key: str, value: bytes,
                     expected_revision: int) -> tuple[bool, int | KeyValue | None]:
        if expected_revision <= 0:  # mod_revision == 0 would mean "create if absent"
            raise ValueError("update needs the expected mod_revision of an existing key")
        self._check_open()
        current = self._at(key, self._revision)
        if current is None or current.mod_revision != expected_revision:
            return False, current
        return True, self._put(key, value, current)

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[bool, KeyValue | None]:
        self._check_open()
        current = self._at(key, self._revision)
        if current is None or (expected_revision and current.mod_revision != expected_revision):
            return False, current
        self._revision += 1
        rev = self._revision
        self._versions[key].append(_Version(rev, None, current.create_revision))
        self._publish(Event("DELETE", key, None, current.value, rev, False))
        return True, KeyValue(key, current.value, rev, current.create_revision)

    def _put(self, key: str, value: bytes, current: KeyValue | None) -> int:
        if len(key) + len(value) > self._max:
            raise TooLarge(f"request of {len(key) + len(value)} bytes is larger than "
                           f"{self._max}")
        self._revision += 1
        rev = self._revision
        create_revision = rev if current is None else current.create_revision
        if key not in self._versions:
            self._versions[key] = []
            bisect.insort(self._keys, key)
        self._versions[key].append(_Version(rev, value, create_revision))
        self._publish(Event("PUT", key, value, None if current is None else current.value, rev,
                            current is None))
        return rev

    # -- history --------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        self._check_open()
        if revision > self._revision:
            raise StorageError("mvcc: required revision is a future revision")
        if revision <= self._compacted:
            return  # someone compacted at or past it already
        self._compacted = revision
        self._log = self._log[bisect.bisect_left([e.revision for e in self._log], revision):]
        for key in list(self._versions):
            versions = self._versions[key]
            # Keep the version that was current at `revision` (it stays readable) and
            # every later one; a deletion that old leaves nothing to read.
            keep = max(0, bisect.bisect_right([v.revision for v in versions], revision) - 1)
            versions[:] = versions[keep:]
            if versions and versions[0].value is None and versions[0].revision <= revision:
                versions.pop(0)
            if not versions:
                del self._versions[key]
                self._keys.pop(bisect.bisect_left(self._keys, key))

    async def compactor(self, *, window_seconds: float = 300, interval: float = 60) -> None:
        await run_compactor(self, window_seconds=window_seconds, interval=interval)

    async def watch(self, prefix: str, from_revision: int, *,
                    prev_values: bool = True) -> AsyncIterator[Batch]:
        self._check_open()
        if from_revision <= 0:
            from_revision = self._revision + 1
        if from_revision < self._compacted:
            raise Compacted(self._compacted, self._revision)
        w = _Watch(prefix, prev_values)
        start = bisect.bisect_left([e.revision for e in self._log], from_revision)
        w.queue = [self._seen_by(w, e) for e in self._log[start:] if e.key.startswith(prefix)]
        self._watches.add(w)  # with the replay above, in one step: no gap
        try:
            while True:
                while not w.queue:
                    if not self._open:
                        raise Unavailable("the store is closed")
                    w.wakeup.clear()
                    await w.wakeup.wait()
                batch, w.queue = w.queue, []
                yield batch
        finally:
            self._watches.discard(w)

    def _publish(self, event: Event) -> None:
        self._log.append(event)
        for w in self._watches:
            if event.key.startswith(w.prefix):
                w.queue.append(self._seen_by(w, event))
                w.wakeup.set()

    @staticmethod
    def _seen_by(w: _Watch, event: Event) -> Event:
        if w.prev_values or event.prev_value is None:
            return event
        return Event(event.type, event.key, event.value, None, event.revision, event.created)

    # -- plumbing -----------------------------------------------------------------------

    def _at(self, key: str, revision: int) -> KeyValue | None:
        versions = self._versions.get(key)
        if not versions:
            return None
        i = bisect.bisect_right([v.revision for v in versions], revision) - 1
        value = versions[i].value if i >= 0 else None
        if value is None:
            return None
        return KeyValue(key, value, versions[i].revision, versions[i].create_revision)

    def _check_open(self) -> None:
        if not self._open:
            raise Unavailable("the store is closed")
