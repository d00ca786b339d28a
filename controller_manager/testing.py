"""Test support for controllers: informers seeded by hand and a client that records.

Controller unit tests follow sample-controller's: seed the caches with objects, call
`reconcile(key)` directly, and assert the list of API actions it made. The
`RecordingClient` answers every write with a plausible object (server fields filled
in) and, when given the informers, applies the write to their caches as the watch
would, so a second `reconcile` sees the first one's effect.
"""
from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

from client.informer import Informer, key_of
from client.rest import Resources
from machinery import errors
from machinery.patch import json_patch, merge_patch, strategic_merge_patch

_rv = itertools.count(1000)


class RecordingClient:
    def __init__(self) -> None:
        self.resources = Resources()
        self.namespace = "default"
        self.actions: list[tuple] = []
        self.informers: dict[str, Informer] = {}
        self.fail: dict[tuple[str, str], errors.APIError] = {}  # (verb, plural) -> error

    def informer(self, plural: str) -> Informer:
        """An informer for `plural` that is never started: tests seed it with `seed`."""
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
        plural = self.resources.get(resource).plural
        inf = self.informers.get(plural)
        obj = inf.store.get(f"{namespace}/{name}" if namespace else name) if inf else None
        if obj is None:
            raise errors.not_found(plural, name)
        return copy.deepcopy(obj)

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
        verb = "update_status" if subresource == "status" else "update"
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
        current = await self.get(r.plural, name, namespace=namespace)
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

    async def bind(self, pod: str, node: str, *, namespace: str | None = None, **_: Any) -> None:
        self._check("bind", "pods")
        self.actions.append(("bind", "pods", f"{namespace}/{pod}", node))
