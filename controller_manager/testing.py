"""Test support for controllers: informers seeded by hand and a client that records.

Controller unit tests follow sample-controller's: seed the caches with objects, call
`reconcile(key)` directly, and assert the list of API actions it made. The
`RecordingClient` answers every write with a plausible object (server fields filled
in) and, when given the informers, applies the write to their caches as the watch
would, so a second `reconcile` sees the first one's effect.
"""
from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import uuid
from typing import Any

from client.informer import Informer, SharedInformerFactory, key_of
from client.rest import Resources
from machinery import errors, labels
from machinery.patch import json_patch, merge_patch, strategic_merge_patch

_rv = itertools.count(1000)


class RecordingClient:
    def __init__(self) -> None:
        self.resources = Resources()
        self.namespace = "default"
        self.actions: list[tuple] = []
        self.informers: dict[str, Informer] = {}
        self.fail: dict[tuple[str, str], errors.APIError] = {}  # (verb, plural) -> error
        # What the server holds where it differs from the caches (a stale cache): GETs
        # answer from here first; None means the server has no such object.
        self.live: dict[tuple[str, str], dict | None] = {}  # (plural, namespace/name) -> obj
        self.reads: list[tuple[str, str]] = []  # (plural, namespace/name) of every GET

    def informer(self, plural: str, **_: Any) -> Informer:
        """An informer for `plural` that is never started: tests seed it with `seed`.
        Selector and namespace arguments are ignored, so this client can also stand in
        for a SharedInformerFactory."""
        plural = self.resources.get(plural).plural
        if plural not in self.informers:
            inf = Informer(self, plural)  # type: ignore[arg-type]
            inf._synced.set()
            self.informers[plural] = inf
        return self.informers[plural]

    def seed(self, *objs: dict) -> None:
        for obj in objs:
            obj = copy.deepcopy(obj)
            md = obj.setdefault("metadata", {})
            md.setdefault("uid", str(uuid.uuid4()))
            md.setdefault("resourceVersion", str(next(_rv)))
            plural = self.resources.for_object(obj).plural
            self._store(plural, obj)

    def _store(self, plural: str, obj: dict | None, key: str | None = None) -> None:
        inf = self.informers.get(plural)
        if inf is None:
            return
        if obj is None:
            old = inf.store.delete(key)
            if old is not None:
                inf._notify("on_delete", old)
            return
        old = inf.store.set(key_of(obj), obj)
        if old is None:
            inf._notify("on_add", obj)
        else:
            inf._notify("on_update", old, obj)

    def _check(self, verb: str, plural: str) -> None:
        err = self.fail.get((verb, plural))
        if err is not None:
            raise err

    def verbs(self) -> list[tuple]:
        """(verb, plural, namespace/name) of every action, for compact assertions."""
        return [a[:3] for a in self.actions]

    # -- the client surface controllers use --------------------------------------------

    async def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict:
        r = self.resources.get(resource)
        key = f"{namespace}/{name}" if namespace and r.namespaced else name
        self.reads.append((r.plural, key))
        return self._current(r.plural, key, name)

    def _current(self, plural: str, key: str, name: str) -> dict:
        if (plural, key) in self.live:
            obj = self.live[(plural, key)]
        else:
            inf = self.informers.get(plural)
            obj = inf.store.get(key) if inf else None
        if obj is None:
            raise errors.not_found(plural, name)
        return copy.deepcopy(obj)

    async def list(self, resource: str, *, namespace: str | None = None,
                   label_selector: str | None = None, **_: Any) -> dict:
        """The seeded cache's objects (a kind with no informer lists as empty)."""
        r = self.resources.get(resource)
        inf = self.informers.get(r.plural)
        selector = labels.parse(label_selector or "")
        items = [copy.deepcopy(o) for o in (inf.store.list() if inf else [])
                 if (not namespace or not r.namespaced or o["metadata"].get("namespace") == namespace)
                 and selector.matches(o["metadata"].get("labels") or {})]
        return {"kind": f"{r.kind}List", "apiVersion": r.api_version,
                "metadata": {"resourceVersion": str(next(_rv))}, "items": items}

    async def create(self, obj: dict, *, namespace: str | None = None, **_: Any) -> dict:
        r = self.resources.for_object(obj)
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if r.namespaced:
            md["namespace"] = namespace or md.get("namespace") or self.namespace
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        self._check("create", r.plural)
        md.update(uid=str(uuid.uuid4()), resourceVersion=str(next(_rv)))
        self.actions.append(("create", r.plural, key_of(obj), obj))
        self._store(r.plural, obj)
        return copy.deepcopy(obj)

    async def update(self, obj: dict, *, subresource: str | None = None, **_: Any) -> dict:
        r = self.resources.for_object(obj)
        verb = f"update_{subresource}" if subresource else "update"
        self._check(verb, r.plural)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(next(_rv))
        self.actions.append((verb, r.plural, key_of(obj), obj))
        self._store(r.plural, obj)
        return copy.deepcopy(obj)

    async def update_status(self, obj: dict, **kw: Any) -> dict:
        return await self.update(obj, subresource="status", **kw)

    async def patch(self, resource: str, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: str = "merge", subresource: str | None = None, **_: Any) -> dict:
        r = self.resources.get(resource)
        verb = "patch_status" if subresource == "status" else "patch"
        self._check(verb, r.plural)
        current = self._current(r.plural, f"{namespace}/{name}" if namespace and r.namespaced
                                else name, name)
        if patch_type == "json":
            new = json_patch(current, patch)
        elif patch_type == "strategic":
            new = strategic_merge_patch(current, patch, r.kind, r.group)
        else:
            new = merge_patch(current, patch)
        new["metadata"]["resourceVersion"] = str(next(_rv))
        self.actions.append((verb, r.plural, key_of(new), patch))
        self._store(r.plural, new)
        return copy.deepcopy(new)

    async def delete(self, resource: str, name: str, *, namespace: str | None = None,
                     **options: Any) -> dict:
        r = self.resources.get(resource)
        self._check("delete", r.plural)
        key = f"{namespace}/{name}" if namespace and r.namespaced else name
        self.actions.append(("delete", r.plural, key, options))
        inf = self.informers.get(r.plural)
        obj = inf.store.get(key) if inf else None
        self._store(r.plural, None, key)
        return copy.deepcopy(obj) if obj else {"kind": "Status", "status": "Success"}

    async def delete_collection(self, resource: str, *, namespace: str | None = None,
                                **options: Any) -> dict:
        r = self.resources.get(resource)
        self._check("delete_collection", r.plural)
        self.actions.append(("delete_collection", r.plural, namespace or "", options))
        inf = self.informers.get(r.plural)
        items = []
        for obj in list(inf.store.list() if inf else []):
            if namespace and r.namespaced and obj["metadata"].get("namespace") != namespace:
                continue
            items.append(copy.deepcopy(obj))
            self._store(r.plural, None, key_of(obj))
        return {"kind": f"{r.kind}List", "apiVersion": r.api_version, "items": items}

    async def bind(self, pod: str, node: str, *, namespace: str | None = None, **_: Any) -> None:
        self._check("bind", "pods")
        self.actions.append(("bind", "pods", f"{namespace}/{pod}", node))


# -- running controllers in-process against a real API server (integration tests) ------

async def eventually(cond, *, timeout: float = 30.0, interval: float = 0.05,
                     what: str = "condition"):
    """Poll `cond` (a function, sync or async) until it answers something truthy, and
    answer that; TimeoutError after `timeout` seconds. Errors count as not yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while True:
        try:
            value = cond()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - e.g. NotFound before the object exists
            value, last = None, exc
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else ""))
        await asyncio.sleep(interval)


class Running:
    """`async with Running(client, (Class, options), ...) as controllers:` builds the
    controllers on one SharedInformerFactory (`options`, a dict, filling `Class.Options`),
    starts its informers and runs each with `workers` workers until the block ends.

    Not a TaskGroup: the block's own exceptions (a failed assertion) must reach the
    test as they are, not wrapped in an ExceptionGroup."""

    def __init__(self, client, *specs, workers: int = 2, recorder=None):
        self.factory = SharedInformerFactory(client)
        self.controllers = [cls(client, self.factory, recorder=recorder, options=cls.Options(**options))
                            for cls, options in specs]
        self.workers = workers
        self._tasks: list = []

    async def __aenter__(self):
        self.factory.start()
        self._tasks = [asyncio.create_task(c.run(self.workers)) for c in self.controllers]
        await self.factory.wait_for_cache_sync(timeout=30)
        return self.controllers

    async def __aexit__(self, *exc) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.factory.stop()
