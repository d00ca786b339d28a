"""The storage interface: what the API server needs of a store, and the values it trades.

`Store` names the methods `apiserver.resources`, `apiserver.cache` and the server's
start-up use, with etcd v3's semantics, as k3s' kine gives every backend one interface:

- One global revision counter. Every successful write (create, update, delete) takes
  the next revision; a value carries the revision that last wrote it (`mod_revision`,
  the API's `resourceVersion`) and the one that created it (`create_revision`).
- `create` fails if the key exists; `update` and `delete` are compare-and-swap on
  `mod_revision`. A failed compare answers `(False, current value or None)`, never
  raises: a conflict is an ordinary outcome.
- `list(prefix, revision=R, limit=N, start_key=K)` reads the keys under `prefix` in key
  order as they were at revision R (0: now), so the pages of one list never mix
  revisions; `ListResult.more` says that `limit` cut it short.
- `watch(prefix, from_revision)` yields batches of `Event`s with revision >=
  `from_revision` (<= 0: from now on), in revision order, never empty, nothing lost or
  repeated. A revision older than the history kept raises `Compacted`, from `list` and
  `watch` alike, and the caller relists.
- `compact(R)` forgets the history before R (R itself stays readable); compacting an
  older revision again is a no-op.
- Failures are this module's exceptions only: `Unavailable`, `Compacted`, `TooLarge`,
  `StorageError`. A closed store ends its watches with `Unavailable`.

`EtcdStore` (etcd.py) is the real one; `MemoryStore` (memory.py) keeps the same
semantics in a dict, for tests of the layers above without etcd.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from collections.abc import AsyncIterator
from typing import Protocol

log = logging.getLogger("minik8s.apiserver.storage")


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    # Read with a key that is no longer the one that writes (encryption.py): an update
    # must write it back even if it changes nothing, to re-encrypt it.
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # "PUT" or "DELETE"
    key: str
    value: bytes | None  # None for DELETE
    # None if the event created the key, or (rarely) if the previous version was
    # already compacted when the store sent the event.
    prev_value: bytes | None
    revision: int
    created: bool


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the store revision the list was read at
    more: bool  # True if limit cut the list short


class StorageError(Exception):
    """A storage failure that is not one of the specific cases below."""


class Unavailable(StorageError):
    """The store could not be reached after retries, did not answer in time, or is closed."""


class TooLarge(StorageError):
    """The value is larger than the store accepts (etcd's --max-request-bytes)."""


class NoSpace(StorageError):
    """The store is out of space (etcd's NOSPACE alarm, raised at --quota-backend-bytes):
    it refuses writes but still serves reads and deletes until an operator compacts,
    defragments and disarms the alarm."""


class Compacted(StorageError):
    """The requested revision has been compacted away; callers answer 410 Gone / relist."""

    def __init__(self, compact_revision: int, current_revision: int):
        super().__init__(f"revision compacted: oldest available is {compact_revision}, "
                         f"current is {current_revision}")
        self.compact_revision = compact_revision
        self.current_revision = current_revision


# The methods' own name `list` shadows the builtin inside the classes below.
Batch = list[Event]
"""One watch response's events: never empty, in revision order."""


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0,
                   start_key: str | None = None) -> ListResult: ...

    async def count(self, prefix: str) -> int: ...

    async def create(self, key: str, value: bytes) -> tuple[bool, int | KeyValue | None]:
        """(True, the new revision), or (False, the existing value)."""
        ...

    async def update(self, key: str, value: bytes,
                     expected_revision: int) -> tuple[bool, int | KeyValue | None]:
        """(True, the new revision), or (False, the current value, None if absent).
        expected_revision <= 0 is a ValueError."""
        ...

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[bool, KeyValue | None]:
        """(True, the deleted value with mod_revision = the delete's revision), or
        (False, the current value, None if there is no such key). 0: whatever is there."""
        ...

    async def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...

    def watch(self, prefix: str, from_revision: int, *,
              prev_values: bool = True) -> AsyncIterator[Batch]:
        """An async generator; prev_values=False leaves every Event.prev_value None."""
        ...

    async def compactor(self, *, window_seconds: float = 300, interval: float = 60) -> None:
        """Forever: keep history for at least window_seconds, compact what is older."""
        ...


async def run_compactor(store: Store, *, window_seconds: float, interval: float) -> None:
    """A store's `compactor`: every interval, compact to the revision that was current
    window_seconds ago. A failed round is logged and retried at the next one."""
    seen: deque[tuple[float, int]] = deque()
    while True:
        try:
            now = time.monotonic()
            seen.append((now, await store.current_revision()))
            target = 0
            while seen and seen[0][0] <= now - window_seconds:
                target = seen.popleft()[1]
            if target:
                await store.compact(target)
        except StorageError as e:  # the store may be back by the next round
            log.warning("compaction skipped: %s", e)
        await asyncio.sleep(interval)
