"""Object semantics of the API, independent of HTTP: what Kubernetes' generic registry
store does for every kind.

Each method takes decoded input, raises `machinery.errors.APIError` for anything the
caller did wrong, and returns plain dicts (or cache entries for reads). Writes go to
etcd as compare-and-swap transactions on `mod_revision`, so two writers can never both
win: the loser gets 409 Conflict (or, for a patch, a silent retry against the new
state, as Kubernetes does). Reads of single objects go to etcd; lists and watches are
served from the watch cache (`apiserver/cache.py`) after it has caught up with etcd.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import functools
import random
import time
import uuid
from typing import Any, AsyncIterator

import orjson

from apiserver import apply as ssa, defaults, validation
from apiserver.cache import Entry, WatchCache, decode
from apiserver.registry import ResourceType, by_plural
from apiserver.storage import Compacted, EtcdStore
from machinery import errors, fields, labels, patch as patches

# Kinds whose status may be set at creation (the kubelet registers a Node with status).
STATUS_ON_CREATE = {"nodes", "events", "leases", "endpoints"}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# A Kubernetes delete with no explicit grace period and no node to wait for is immediate.
_TERMINAL_PHASES = ("Succeeded", "Failed")


def now() -> str:
    return _rfc3339(int(time.time()))


@functools.lru_cache(maxsize=2)  # formatted once a second, not once per write
def _rfc3339(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# A write that lost a compare-and-swap to another writer is tried again on the new state
# (Kubernetes' GuaranteedUpdate retries until the request times out): this many tries,
# spaced by `_contended`, before a 409 "too many concurrent writers".
WRITE_ATTEMPTS = 64


async def _contended(attempt: int) -> None:
    """Jittered exponential back-off before retry `attempt` of a contended write (up to
    50 ms), so writers that collided once do not collide again in step."""
    if attempt > 0:
        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** attempt)))


def encode(obj: dict) -> bytes:
    """What goes to etcd: the object without its resourceVersion (that is the key's revision)."""
    md = obj.get("metadata") or {}
    rv = md.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            md["resourceVersion"] = rv


def load(value: bytes, revision: int) -> dict:
    """A stored value as a private object carrying its resourceVersion (cache.decode
    without the serialized copy the cache keeps for output)."""
    obj = orjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


class _MaybeStale(Exception):
    """A write decided on the watch cache's copy found nothing to do; the copy may be
    behind, so the decision is taken again on a fresh read."""


def with_rv(obj: dict, revision: int) -> dict:
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


class Selection:
    """A parsed namespace + labelSelector + fieldSelector, as one predicate."""

    def __init__(self, rt: ResourceType, namespace: str = "", label_selector: str = "",
                 field_selector: str = ""):
        self.rt = rt
        self.namespace = namespace if rt.namespaced else ""
        self.labels = labels.parse(label_selector or "")
        self.fields = fields.parse(field_selector or "")
        sample = rt.fields({})
        for name in self.fields.fields():
            if name not in sample:
                raise errors.BadRequest(f'field label not supported: {name}')
        self.trivial = self.labels.empty and not self.fields.requirements

    def __call__(self, obj: dict) -> bool:
        md = obj.get("metadata") or {}
        if self.namespace and md.get("namespace") != self.namespace:
            return False
        if self.trivial:
            return True
        return self.labels.matches(md.get("labels") or {}) and self.fields.matches(self.rt.fields(obj))


def _encode_continue(revision: int, start: str) -> str:
    raw = orjson.dumps({"rv": revision, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        return int(data["rv"]), str(data["start"])
    except Exception:  # noqa: BLE001 - any garbage is the client's
        raise errors.BadRequest("continue key is not valid: invalid continue token") from None


def _parse_rv(value: str | None, what: str = "resourceVersion") -> int | None:
    if value in (None, ""):
        return None
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError
        return rv
    except ValueError:
        raise errors.BadRequest(f'invalid {what} "{value}"') from None


class Resources:
    def __init__(self, store: EtcdStore, cache: WatchCache):
        self.store = store
        self.cache = cache

    # -- reads ----------------------------------------------------------------------

    async def get(self, rt: ResourceType, namespace: str, name: str) -> dict:
        kv = await self.store.get(rt.key(namespace, name))
        if kv is None:
            raise errors.not_found(rt.group_resource, name)
        return decode(kv.key, kv.value, kv.mod_revision).obj

    async def list(self, rt: ResourceType, sel: Selection, *, limit: int = 0,
                   continue_token: str = "", resource_version: str | None = None,
                   rv_match: str = "") -> tuple[list[Entry], int, str, int | None]:
        """-> (entries, list revision, continue token, remaining count or None)."""
        if continue_token:
            if resource_version not in (None, ""):
                raise errors.BadRequest("specifying resource version is not allowed when using continue")
            revision, start = _decode_continue(continue_token)
            if self.cache.revision == revision and self.cache.ready.is_set():
                return self._page(self.cache.entries(rt, sel.namespace), sel, limit, revision, start)
            return await self._list_etcd(rt, sel, limit, revision, start)
        rv = _parse_rv(resource_version)
        if rv_match == "Exact" and rv:
            return await self._list_etcd(rt, sel, limit, rv, "")
        if rv is None:
            # A consistent read: the cache must have seen every write etcd has.
            rv = await self.store.current_revision()
        if not self.cache.ready.is_set() or not await self.cache.wait_for(rv):
            if resource_version in (None, ""):
                return await self._list_etcd(rt, sel, limit, 0, "")
            raise errors.ServerTimeout(f"Too large resource version: {rv}, current: {self.cache.revision}",
                                       retry_after=1)
        return self._page(self.cache.entries(rt, sel.namespace), sel, limit, self.cache.revision, "")

    @staticmethod
    def _page(entries: list[Entry], sel: Selection, limit: int, revision: int, start: str):
        out: list[Entry] = []
        for i, e in enumerate(entries):
            if start and e.key < start:
                continue
            if sel(e.obj):
                if limit and len(out) == limit:
                    rest = sum(1 for x in entries[i:] if sel(x.obj))
                    return out, revision, _encode_continue(revision, out[-1].key + "\x00"), rest
                out.append(e)
        return out, revision, "", None

    async def _list_etcd(self, rt: ResourceType, sel: Selection, limit: int, revision: int,
                         start: str):
        """A list read from etcd at one revision: for continue tokens the cache has moved past."""
        out: list[Entry] = []
        start = start or rt.prefix(sel.namespace)
        prefix = rt.prefix(sel.namespace)
        while True:
            try:
                page = await self.store.list(prefix, revision=revision, limit=max(limit, 500),
                                             start_key=start)
            except Compacted:
                raise errors.Gone("The provided continue parameter is too old to display a "
                                  "consistent list result. You can start a new list without "
                                  "the continue parameter, or use the continue token in this "
                                  "response to retrieve the remainder of the results.") from None
            revision = page.revision
            for kv in page.items:
                e = decode(kv.key, kv.value, kv.mod_revision)
                if sel(e.obj):
                    if limit and len(out) == limit:
                        return out, revision, _encode_continue(revision, out[-1].key + "\x00"), None
                    out.append(e)
            if not page.more:
                return out, revision, "", None
            start = page.items[-1].key + "\x00"

    async def watch(self, rt: ResourceType, sel: Selection, *, resource_version: str | None,
                    bookmarks: bool) -> AsyncIterator[tuple[str, Any]]:
        """Checks everything that can fail with a clean HTTP error first, then returns the
        stream of batches of (type, Entry) and ("BOOKMARK", revision) items."""
        rv = _parse_rv(resource_version)
        if rv == 0:
            rv = None  # "any": start from the current state, as Kubernetes' cache does
        if rv is not None and rv > self.cache.revision and not await self.cache.wait_for(rv):
            raise errors.ServerTimeout(f"Too large resource version: {rv}, current: "
                                       f"{self.cache.revision}", retry_after=1)
        if rv is None or self.cache.covers(rt, rv):
            return self._watch_cache(rt, sel, rv, bookmarks)
        current = await self.store.current_revision()
        try:  # detect compaction before any byte is streamed, so the answer is a plain 410
            await self.store.list(rt.prefix(sel.namespace), revision=min(rv + 1, current), limit=1)
        except Compacted as exc:
            raise errors.Gone(f"too old resource version: {rv} ({exc.compact_revision})") from None
        return self._watch_etcd(rt, sel, rv)

    async def _watch_cache(self, rt, sel, rv, bookmarks):
        w = self.cache.watch(rt, sel, after=rv, bookmarks=bookmarks)
        try:
            while batch := await w.next_batch():
                yield batch
        finally:
            self.cache.unwatch(rt, w)

    async def _watch_etcd(self, rt, sel, rv):
        """A watch older than the cache's history, read straight from etcd's history."""
        stream = self.store.watch(rt.prefix(sel.namespace), rv + 1)
        try:
            async for batch in stream:
                out = []
                for ev in batch:
                    old = decode(ev.key, ev.prev_value, ev.revision) if ev.prev_value else None
                    if ev.type == "DELETE":
                        if old is not None and sel(old.obj):
                            out.append(("DELETED", old))
                        continue
                    new = decode(ev.key, ev.value, ev.revision)
                    was, now_ = old is not None and sel(old.obj), sel(new.obj)
                    if now_:
                        out.append((("MODIFIED" if was else "ADDED"), new))
                    elif was:
                        out.append(("DELETED", new))
                if out:
                    yield out
        except Compacted as exc:
            yield [("ERROR", errors.Gone(f"too old resource version: {rv} ({exc.compact_revision})"))]
        finally:
            await stream.aclose()

    # -- writes ---------------------------------------------------------------------

    def _check_identity(self, rt: ResourceType, body: Any, namespace: str, name: str | None) -> dict:
        if not isinstance(body, dict):
            raise errors.BadRequest(f"the body of the request must be a {rt.kind} object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if kind is not None and kind != rt.kind:
            raise errors.BadRequest(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        if api_version is not None and api_version != rt.api_version:
            raise errors.BadRequest(f"the API version in the data ({api_version}) does not match "
                                    f"the expected API version ({rt.api_version})")
        md = body.get("metadata")
        if md is None:
            md = body["metadata"] = {}
        if not isinstance(md, dict):
            raise errors.BadRequest("metadata must be an object")
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind
        if rt.namespaced:
            if md.get("namespace") not in (None, "", namespace):
                raise errors.BadRequest("the namespace of the provided object does not match "
                                        "the namespace sent on the request")
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        if name is not None and md.get("name") not in (None, name):
            raise errors.BadRequest(f"the name of the object ({md.get('name')}) does not match "
                                    f"the name on the URL ({name})")
        return md

    def _validate(self, rt: ResourceType, obj: dict, *, strict: str, old: dict | None = None,
                  warnings: list[str] | None = None) -> None:
        causes = validation.schema_causes(obj, strict=True)
        unknown = [c for c in causes if c.get("message", "").startswith("unknown field")]
        if unknown and strict != "Strict":
            for c in unknown:
                _drop_path(obj, c["field"])
                if warnings is not None and strict != "Ignore":
                    warnings.append(c["message"])
            causes = [c for c in causes if c not in unknown]
        causes += validation.semantic_causes(obj, kind=rt.kind, namespaced=rt.namespaced)
        if old is not None:
            causes += validation.update_causes(old, obj, kind=rt.kind)
        if causes:
            name = (obj.get("metadata") or {}).get("name") or ""
            raise errors.invalid(rt.kind, name, causes, group=rt.group)

    async def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        ns_rt = by_plural("namespaces")
        entry = self.cache.get(ns_rt, ns_rt.key("", namespace))
        ns = entry.obj if entry else None
        if ns is None:
            kv = await self.store.get(ns_rt.key("", namespace))
            if kv is None:
                raise errors.not_found("namespaces", namespace)
            ns = orjson.loads(kv.value)
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise errors.Forbidden(f"{rt.plural} is forbidden: unable to create new content in "
                                   f"namespace {namespace} because it is being terminated",
                                   kind=rt.plural)

    async def create(self, rt: ResourceType, namespace: str, body: Any, *, dry_run: bool = False,
                     field_validation: str = "", warnings: list[str] | None = None,
                     manager: str = "") -> dict:
        md = self._check_identity(rt, body, namespace, None)
        obj = body
        if md.get("resourceVersion"):
            raise errors.BadRequest("resourceVersion should not be set on objects to be created")
        if not md.get("name") and not md.get("generateName"):
            raise errors.invalid(rt.kind, "", [{"reason": "FieldValueRequired", "field": "metadata.name",
                                                "message": "name or generateName is required"}],
                                 group=rt.group)
        await self._check_namespace(rt, namespace)
        generated = not md.get("name")
        for _ in range(8 if generated else 1):
            if generated:
                md["name"] = md["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
            md.update(uid=str(uuid.uuid4()), creationTimestamp=now())
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                md.pop(k, None)
            if rt.has_generation:
                md["generation"] = 1
            else:
                md.pop("generation", None)
            if rt.status_subresource and rt.plural not in STATUS_ON_CREATE:
                obj.pop("status", None)
            if rt.plural == "namespaces":
                obj["status"] = {"phase": "Active"}
            defaults.apply_defaults(obj, rt.kind)
            self._validate(rt, obj, strict=field_validation, warnings=warnings)
            if manager:
                ssa.record_update(None, obj, rt, manager=manager, subresource=None, now=now())
            if dry_run:
                return obj
            ok, result = await self.store.create(rt.key(namespace, md["name"]), encode(obj))
            if ok:
                return with_rv(obj, result)
        raise errors.already_exists(rt.group_resource, md["name"])

    def _merge_update(self, rt: ResourceType, old: dict, new: dict, subresource: str | None) -> dict:
        """Carry over what a client may not change through this endpoint."""
        if subresource == "status":
            merged = orjson.loads(orjson.dumps(old))  # a deep copy; much faster than copy.deepcopy
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            nmd = new.get("metadata") or {}
            for k in ("labels", "annotations", "finalizers", "ownerReferences"):
                if k not in rt.status_keeps:
                    if k in nmd:
                        merged["metadata"][k] = nmd[k]
                    else:
                        merged["metadata"].pop(k, None)
            if nmd.get("managedFields") is not None:
                merged["metadata"]["managedFields"] = nmd["managedFields"]
            return merged
        omd, nmd = old["metadata"], new["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation"):
            if k in omd:
                nmd[k] = omd[k]
            else:
                nmd.pop(k, None)
        if nmd.get("managedFields") is None and omd.get("managedFields"):
            nmd["managedFields"] = omd["managedFields"]  # not sent: kept, as in Kubernetes
        if rt.status_subresource:
            if "status" in old:
                new["status"] = orjson.loads(orjson.dumps(old["status"]))
            else:
                new.pop("status", None)
        if rt.has_generation and _spec(old) != _spec(new):
            nmd["generation"] = omd.get("generation", 1) + 1
        return new

    async def update(self, rt: ResourceType, namespace: str, name: str, body: Any, *,
                     subresource: str | None = None, dry_run: bool = False,
                     field_validation: str = "", warnings: list[str] | None = None,
                     manager: str = "") -> dict:
        md = self._check_identity(rt, body, namespace, name)
        md["name"] = name
        precondition = _parse_rv(md.get("resourceVersion"))
        key = rt.key(namespace, name)
        kv = await self.store.get(key)
        if kv is None:
            raise errors.not_found(rt.group_resource, name)
        if precondition is not None and precondition != kv.mod_revision:
            raise errors.conflict(rt.plural, name, rt.group)
        old = load(kv.value, kv.mod_revision)
        return await self._write(rt, key, old, kv.mod_revision, body, subresource=subresource,
                                 dry_run=dry_run, field_validation=field_validation,
                                 warnings=warnings, manager=manager)

    async def _current(self, rt: ResourceType, key: str, *, cached: bool) -> tuple[dict, int] | None:
        """(a private copy of the object at `key`, its revision), None if there is none.

        cached=True starts from the watch cache's copy, which may be behind etcd, as
        Kubernetes' GuaranteedUpdate does: that saves an etcd read per write, and is safe
        only for a compare-and-swap write whose every other outcome (an error, nothing
        to do) is decided again on a fresh read. A key the cache lacks is read fresh."""
        if cached:
            entry = self.cache.get(rt, key)
            if entry is not None:
                return orjson.loads(entry.raw), entry.revision
        kv = await self.store.get(key)
        return None if kv is None else (load(kv.value, kv.mod_revision), kv.mod_revision)

    async def _write(self, rt: ResourceType, key: str, old: dict, revision: int, new: dict, *,
                     subresource: str | None, dry_run: bool, field_validation: str,
                     warnings: list[str] | None, manager: str = "", cached: bool = False) -> dict:
        name = old["metadata"]["name"]
        new = self._merge_update(rt, old, new, subresource)
        new["metadata"].pop("resourceVersion", None)
        defaults.apply_defaults(new, rt.kind)
        self._validate(rt, new, strict=field_validation, old=old, warnings=warnings)
        if manager:
            ssa.record_update(old, new, rt, manager=manager, subresource=subresource, now=now())
        if dry_run:
            return with_rv(new, revision)
        if _finished(rt, new):
            ok, result = await self.store.delete(key, revision)
            if not ok:
                raise errors.conflict(rt.plural, name, rt.group)
            return with_rv(new, result.mod_revision)
        old_body = dict(old)
        old_body["metadata"] = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
        if old_body == new:
            if cached:
                raise _MaybeStale
            return with_rv(new, revision)  # no-op writes keep the resourceVersion, as in Kubernetes
        ok, result = await self.store.update(key, encode(new), revision)
        if not ok:
            if result is None:
                raise errors.not_found(rt.group_resource, name)
            raise errors.conflict(rt.plural, name, rt.group)
        return with_rv(new, result)

    async def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str,
                    body: Any, *, subresource: str | None = None, dry_run: bool = False,
                    field_validation: str = "", warnings: list[str] | None = None,
                    manager: str = "") -> dict:
        key = rt.key(namespace, name)
        # Attempt -1 starts from the watch cache's copy (see _current), on top of the 16
        # from etcd's; a dry run's answer has no swap to check it, so it reads etcd.
        for attempt in range(0 if dry_run else -1, WRITE_ATTEMPTS):
            cached = attempt < 0
            current = await self._current(rt, key, cached=cached)
            if current is None:
                raise errors.not_found(rt.group_resource, name)
            old, revision = current
            try:
                # As in Kubernetes, the patch applies to the current object, resourceVersion
                # included: a version in the result that is not the current one can only
                # come from the patch, and is a precondition that fails.
                new = apply_patch(rt, old, patch_type, body)
                if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                    raise errors.BadRequest("the patch produced an object that is not a "
                                            f"{rt.kind}")
                pinned = _parse_rv(new["metadata"].get("resourceVersion"))
                if pinned is not None and pinned != revision:
                    raise errors.conflict(rt.plural, name, rt.group)
                uid = new["metadata"].get("uid")
                if uid and uid != old["metadata"].get("uid"):
                    raise errors.conflict(rt.plural, name, rt.group, why=(
                        f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                        f"{old['metadata'].get('uid')}"))
                self._check_identity(rt, new, namespace, name)
            except errors.APIError:
                if cached:
                    continue  # judged on a copy that may be behind: judge again on etcd's
                raise
            said: list[str] | None = None if warnings is None else []  # this attempt's warnings
            try:
                result = await self._write(rt, key, old, revision, new, subresource=subresource,
                                           dry_run=dry_run, field_validation=field_validation,
                                           warnings=said, manager=manager, cached=cached)
                if warnings is not None and said:
                    warnings.extend(said)
                return result
            except _MaybeStale:
                continue
            except errors.Conflict:
                # Someone wrote between our read and our write: re-apply the patch to the
                # new state (a pinned version then fails the check above).
                await _contended(attempt)
            except errors.APIError:
                if cached:
                    continue
                raise
        raise errors.conflict(rt.plural, name, rt.group, why="too many concurrent writers")

    async def apply(self, rt: ResourceType, namespace: str, name: str, body: Any, *,
                    manager: str, force: bool = False, subresource: str | None = None,
                    dry_run: bool = False, field_validation: str = "",
                    warnings: list[str] | None = None) -> tuple[dict, bool]:
        """Server-side apply (`apiserver.apply`): -> (object, created)."""
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise errors.BadRequest("an apply configuration must be an object with apiVersion and kind")
        md = self._check_identity(rt, body, namespace, name)
        if md.get("managedFields") is not None:
            raise errors.BadRequest("metadata.managedFields must be nil")
        md["name"] = name
        precondition = _parse_rv(md.get("resourceVersion"))
        key = rt.key(namespace, name)
        for attempt in range(WRITE_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None:
                if subresource is not None or precondition is not None:
                    raise errors.not_found(rt.group_resource, name)
                obj = ssa.apply(None, body, rt, manager=manager, force=force, subresource=None,
                                now=now())
                try:
                    return await self.create(rt, namespace, obj, dry_run=dry_run,
                                             field_validation=field_validation,
                                             warnings=warnings), True
                except errors.AlreadyExists:
                    continue  # created meanwhile: apply to it
            if precondition is not None and precondition != kv.mod_revision:
                raise errors.conflict(rt.plural, name, rt.group)
            live = decode(key, kv.value, kv.mod_revision).obj
            new = ssa.apply(live, body, rt, manager=manager, force=force,
                            subresource=subresource, now=now())
            try:
                return await self._write(rt, key, live, kv.mod_revision, new,
                                         subresource=subresource, dry_run=dry_run,
                                         field_validation=field_validation,
                                         warnings=warnings), False
            except errors.Conflict:
                if precondition is not None:
                    raise
                await _contended(attempt)
        raise errors.conflict(rt.plural, name, rt.group, why="too many concurrent writers")

    async def delete(self, rt: ResourceType, namespace: str, name: str, options: dict, *,
                     dry_run: bool = False) -> tuple[dict, bool]:
        """-> (object, gone): gone is False while finalizers or a grace period hold it."""
        key = rt.key(namespace, name)
        for attempt in range(WRITE_ATTEMPTS):
            await _contended(attempt)
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(rt.group_resource, name)
            obj = decode(key, kv.value, kv.mod_revision).obj
            md = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise errors.conflict(rt.plural, name, rt.group,
                                      why=f"Precondition failed: UID in precondition: {pre['uid']}, "
                                          f"UID in object meta: {md.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
                raise errors.conflict(rt.plural, name, rt.group,
                                      why=f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                          f"{md['resourceVersion']}")
            updated = self._deletion_state(rt, obj, options)
            if dry_run:
                return obj, updated is None
            if updated is None:
                ok, result = await self.store.delete(key, kv.mod_revision)
                if ok:
                    return with_rv(obj, result.mod_revision), True
            else:
                if updated == obj:
                    return obj, False
                updated["metadata"].pop("resourceVersion", None)
                ok, result = await self.store.update(key, encode(updated), kv.mod_revision)
                if ok:
                    return with_rv(updated, result), False
        raise errors.conflict(rt.plural, name, rt.group, why="too many concurrent writers")

    def _deletion_state(self, rt: ResourceType, obj: dict, options: dict) -> dict | None:
        """The object as it should be after this delete request, or None to remove it now."""
        md = obj["metadata"]
        grace = options.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or grace < 0):
            grace = 0 if isinstance(grace, int) else None
            if grace is None:
                raise errors.BadRequest("gracePeriodSeconds must be a non-negative integer")
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise errors.invalid("DeleteOptions", "", [{
                "reason": "FieldValueNotSupported", "field": "propagationPolicy",
                "message": f'Unsupported value: "{policy}": supported values: "Foreground", '
                           f'"Background", "Orphan"'}])
        new = copy.deepcopy(obj)
        nmd = new["metadata"]
        finalizers = list(nmd.get("finalizers") or [])
        for f, wanted in (("orphan", policy == "Orphan"), ("foregroundDeletion", policy == "Foreground")):
            if wanted and f not in finalizers:
                finalizers.append(f)
            if policy is not None and not wanted and f in finalizers and not md.get("deletionTimestamp"):
                finalizers.remove(f)
        if finalizers:
            nmd["finalizers"] = finalizers
        if rt.plural == "pods":
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
            if not spec.get("nodeName") or status.get("phase") in _TERMINAL_PHASES:
                grace = 0
            current = md.get("deletionGracePeriodSeconds")
            if current is not None and grace > current:
                grace = current  # a grace period can only be shortened
            if grace > 0:
                nmd["deletionGracePeriodSeconds"] = grace
                if current is None or grace < current:
                    nmd["deletionTimestamp"] = _later(grace)
                return new
        if rt.plural == "namespaces" and (new.get("spec") or {}).get("finalizers"):
            new.setdefault("status", {})["phase"] = "Terminating"
            nmd.setdefault("deletionTimestamp", now())
            nmd.setdefault("deletionGracePeriodSeconds", 0)
            return new
        if finalizers:
            nmd.setdefault("deletionTimestamp", now())
            nmd.setdefault("deletionGracePeriodSeconds", 0)
            if rt.plural == "pods":
                nmd["deletionGracePeriodSeconds"] = 0
            return new
        return None

    async def delete_collection(self, rt: ResourceType, sel: Selection, options: dict, *,
                                dry_run: bool = False) -> tuple[list[dict], int]:
        entries, revision, _, _ = await self.list(rt, sel)
        out = []
        for e in entries:
            md = e.obj["metadata"]
            try:
                obj, _ = await self.delete(rt, md.get("namespace", ""), md["name"], options,
                                           dry_run=dry_run)
                out.append(obj)
            except errors.NotFound:
                pass
        return out, revision

    # -- subresources ---------------------------------------------------------------

    async def bind(self, namespace: str, name: str, binding: Any, *, dry_run: bool = False) -> None:
        pods = by_plural("pods")
        if not isinstance(binding, dict) or not isinstance(binding.get("target"), dict):
            raise errors.BadRequest("the body of the request must be a Binding with a target")
        node = binding["target"].get("name")
        if not node or not isinstance(node, str):
            raise errors.invalid("Binding", name, [{"reason": "FieldValueRequired",
                                                    "field": "target.name", "message": "Required value"}])
        key = pods.key(namespace, name)
        for attempt in range(0 if dry_run else -1, WRITE_ATTEMPTS):
            await _contended(attempt)
            cached = attempt < 0  # from the watch cache's copy first, as in patch
            current = await self._current(pods, key, cached=cached)
            if current is None:
                raise errors.not_found("pods", name)
            pod, revision = current
            uid = (binding.get("metadata") or {}).get("uid")
            why = None
            if uid and uid != pod["metadata"].get("uid"):
                # A binding meant for an earlier pod of the same name.
                why = f"Precondition failed: UID in precondition: {uid}, UID in object meta: " \
                      f"{pod['metadata'].get('uid')}"
            elif pod["metadata"].get("deletionTimestamp"):
                why = "pod is being deleted, cannot be assigned to a host"
            elif bound := (pod.get("spec") or {}).get("nodeName"):
                why = f"pod {name} is already assigned to node \"{bound}\""
            if why is not None:
                if cached:
                    continue  # judged on a copy that may be behind: judge again on etcd's
                raise errors.conflict("pods", name, why=why)
            pod.setdefault("spec", {})["nodeName"] = node
            conds = [c for c in (pod.setdefault("status", {}).get("conditions") or [])
                     if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now()})
            pod["status"]["conditions"] = conds
            if dry_run:
                return
            pod["metadata"].pop("resourceVersion", None)
            ok, _ = await self.store.update(key, encode(pod), revision)
            if ok:
                return
        raise errors.conflict("pods", name, why="too many concurrent writers")

    async def get_scale(self, rt: ResourceType, namespace: str, name: str) -> dict:
        return to_scale(await self.get(rt, namespace, name))

    async def update_scale(self, rt: ResourceType, namespace: str, name: str, body: Any, *,
                           patch_type: str | None = None, dry_run: bool = False,
                           manager: str = "") -> dict:
        key = rt.key(namespace, name)
        for attempt in range(WRITE_ATTEMPTS):
            await _contended(attempt)
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(rt.group_resource, name)
            obj = decode(key, kv.value, kv.mod_revision).obj
            scale = to_scale(obj)
            if patch_type is not None:
                scale = apply_patch(by_plural("deployments"), scale, patch_type, body, kind="Scale")
            elif not isinstance(body, dict):
                raise errors.BadRequest("the body of the request must be a Scale object")
            else:
                scale = body
            replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid("Scale", name, [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                                      "message": f"Invalid value: {replicas!r}: must be greater "
                                                                 "than or equal to 0"}], group="autoscaling")
            pre = _parse_rv((scale.get("metadata") or {}).get("resourceVersion"))
            if pre is not None and pre != kv.mod_revision:
                raise errors.conflict(rt.plural, name, rt.group)
            new = copy.deepcopy(obj)
            new["spec"]["replicas"] = replicas
            try:
                result = await self._write(rt, key, obj, kv.mod_revision, new, subresource=None,
                                           dry_run=dry_run, field_validation="", warnings=None,
                                           manager=manager)
            except errors.Conflict:
                continue  # re-read: a version pinned by the client then fails the check above
            return to_scale(result)
        raise errors.conflict(rt.plural, name, rt.group, why="too many concurrent writers")

    async def ensure_system_namespaces(self) -> None:
        ns = by_plural("namespaces")
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(ns, "", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name}})
            except errors.AlreadyExists:
                pass


def to_scale(obj: dict) -> dict:
    md = obj["metadata"]
    sel = ((obj.get("spec") or {}).get("selector") or {})
    selector = ",".join(f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items()))
    for expr in sel.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        selector += ("," if selector else "") + {
            "In": f"{key} in ({','.join(values)})", "NotIn": f"{key} notin ({','.join(values)})",
            "Exists": key, "DoesNotExist": f"!{key}"}.get(op, "")
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                            "creationTimestamp") if k in md},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": selector}}


def apply_patch(rt: ResourceType, old: dict, patch_type: str, body: Any, *, kind: str | None = None) -> Any:
    if patch_type == "application/merge-patch+json":
        if not isinstance(body, dict):
            raise errors.BadRequest("a merge patch must be a JSON object")
        return patches.merge_patch(old, body)
    if patch_type == "application/json-patch+json":
        return patches.json_patch(old, body)
    if patch_type == "application/strategic-merge-patch+json":
        if not isinstance(body, dict):
            raise errors.BadRequest("a strategic merge patch must be a JSON object")
        return patches.strategic_merge_patch(old, body, kind or rt.kind, rt.group)
    raise errors.UnsupportedMediaType(f"the media type {patch_type!r} is not supported for patch")


def _spec(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _finished(rt: ResourceType, obj: dict) -> bool:
    """An object marked for deletion whose last finalizer has just gone is removed."""
    md = obj["metadata"]
    if not md.get("deletionTimestamp") or md.get("finalizers"):
        return False
    if rt.plural == "namespaces":
        return not (obj.get("spec") or {}).get("finalizers")
    if rt.plural == "pods":
        return md.get("deletionGracePeriodSeconds", 0) == 0
    return True


def _later(seconds: int) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop_path(obj: Any, path: str) -> None:
    """Remove the field at a Kubernetes field path like `spec.containers[0].foo`."""
    tokens: list[Any] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            tokens.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            tokens.append(int(idx) if idx.isdigit() else idx)
            rest = rest.lstrip("[")
    cur = obj
    try:
        for t in tokens[:-1]:
            cur = cur[t]
        if isinstance(cur, dict):
            cur.pop(tokens[-1], None)
    except (KeyError, IndexError, TypeError):
        pass
