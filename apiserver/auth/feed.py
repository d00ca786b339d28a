"""`CacheFeed`: keeps an authorizer's in-memory index current from the API server's own
watch cache (apiserver/cache.py), as upstream's authorizers follow informers.

For each kind it takes the cache's snapshot and subscribes with no await between the two,
so no change falls in the gap (a change the snapshot holds may be replayed; applying it
again is harmless); a closed watch starts over from the cache. `synced` is set once every
kind's snapshot is in. The sink gets `replace(kind, objs)`, `put(kind, obj)` and
`delete(kind, obj)`, kind being the resource's plural.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Sink(Protocol):
    def replace(self, kind: str, objs: list[dict]) -> None: ...
    def put(self, kind: str, obj: dict) -> None: ...
    def delete(self, kind: str, obj: dict) -> None: ...


class CacheFeed:
    def __init__(self, cache: Any, sink: Sink, kinds: Sequence[str], name: str):
        """kinds: plurals; one the server does not serve is skipped (it may be added later)."""
        self.cache, self.sink, self.kinds, self.name = cache, sink, tuple(kinds), name
        self.synced = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        from apiserver import registry  # the registry imports the strategies; not at import time
        await self.cache.ready.wait()
        kinds = [rt for rt in map(registry.by_plural, self.kinds) if rt is not None]
        started = [asyncio.Event() for _ in kinds]
        self._tasks = [asyncio.create_task(self._follow(rt, done), name=f"{self.name}-feed-{rt.plural}")
                       for rt, done in zip(kinds, started)]
        await asyncio.gather(*(e.wait() for e in started))
        self.synced.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow(self, rt: Any, started: asyncio.Event) -> None:
        kind = rt.plural
        while True:
            await self.cache.listed.wait()
            self.sink.replace(kind, [e.obj for e in self.cache.entries(rt)])
            watcher = self.cache.watch(rt, lambda obj: True, after=self.cache.revision, bookmarks=False)
            started.set()
            try:
                while batch := await watcher.next_batch():
                    for event, entry in batch:
                        if event == "DELETED":
                            self.sink.delete(kind, entry.obj)
                        elif event != "BOOKMARK":
                            self.sink.put(kind, entry.obj)
            finally:
                self.cache.unwatch(rt, watcher)
            log.info("%s: the watch of %s was closed; starting over from the cache", self.name, kind)
