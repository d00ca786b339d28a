"""Object semantics of the API, independent of HTTP: what Kubernetes' generic registry
store does for every kind.

Each method takes decoded input, raises `machinery.errors.APIError` for anything the
caller did wrong, and returns plain dicts (or cache entries for reads). What differs by
kind (what a create resets, what an update carries over, how a delete waits, a pod's
binding) is asked of the kind's strategy (`apiserver/strategies/`); nothing here
branches on a kind.

Every write to an existing object goes through `guaranteed_update`: a compare-and-swap
transaction on etcd's `mod_revision`, so two writers can never both win. The loser
re-reads and tries again on the new state, as Kubernetes does, unless its request
pinned a resourceVersion (or a UID) that no longer holds: that is 409 Conflict. Reads
of single objects go to etcd; lists and watches are served from the watch cache
(`apiserver/cache.py`) after it has caught up with etcd. The store is used through its
public methods only (get, list, create, update, delete, current_revision, watch).

Versions: a kind may be stored at another version than a request names
(`ResourceType.storage_version`), and objects written before a storage version changed
stay at the old one until rewritten. Every object a request gets back (get, list, watch
events, the answer to a write) is at the request's version (`ResourceType.to_served`),
every write stores the storage version (`to_storage`), and a strategy's hooks always see
the request's version.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import random
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson

from apiserver import apply as ssa, defaults
from apiserver.cache import Entry, WatchCache, decode, list_metrics
from apiserver.registry import ResourceType, by_plural
from apiserver.storage import Compacted, Store
from apiserver.timestamps import later, now
from machinery import errors, fields, kinds, labels, patch as patches

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# What a `/scale` patch applies to: an autoscaling/v1 Scale, whatever kind is scaled.
_SCALE = kinds.Kind("autoscaling", "v1", "Scale", "scale", True)

# A write that lost a compare-and-swap to another writer is tried again on the new state
# (Kubernetes' GuaranteedUpdate retries until the request times out): this many tries,
# spaced by `_contended`, before a 409 "too many concurrent writers".
WRITE_ATTEMPTS = 64


async def _contended(attempt: int) -> None:
    """Jittered exponential back-off before retry `attempt` of a contended write (up to
    50 ms), so writers that collided once do not collide again in step."""
    if attempt > 0:
        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** attempt)))


@dataclass(frozen=True)
class WriteOptions:
    """What a create, update, patch, apply or delete request asks besides its body
    (Kubernetes' CreateOptions, UpdateOptions, PatchOptions), checked by the caller.

    field_manager: who owns the fields written ("" records no manager); field_validation:
    "", "Ignore", "Warn" or "Strict" for unknown fields; force: an apply takes fields
    other managers own. warnings, if given, is the request's sink for warnings (sent
    back as `Warning` headers), the one part that is written to. admit, if given, is the
    request's admission (apiserver/app.py): awaited with (the object as it is to be
    stored, the stored one or None) after validation and before storage, on every
    attempt; it raises APIError to refuse the write."""
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = ""
    force: bool = False
    warnings: list[str] | None = field(default=None, compare=False)
    admit: Callable[[dict, dict | None], Awaitable[None]] | None = field(default=None, compare=False)
    # Who is asking (an apiserver.auth.authorizer.UserInfo; None for the server's own
    # writes): what a kind that records its requestor reads (Strategy.set_requestor).
    user: Any = field(default=None, compare=False)


class Removed:
    """A try_update's answer that the object is to be removed, not stored; `obj` is what
    the request answers with."""
    __slots__ = ("obj",)

    def __init__(self, obj: dict):
        self.obj = obj


# try_update(current object, its revision) -> the object to store, or Removed.
TryUpdate = Callable[[dict, int], "dict | Removed"]


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
                if rt.extra.get("crd"):  # DefaultMetaV1FieldSelectorConversion's words
                    raise errors.BadRequest(f'"{name}" is not a known field selector: only '
                                            + ", ".join(f'"{k}"' for k in sample))
                raise errors.BadRequest(f'field label not supported: {name}')
        self.trivial = self.labels.empty and not self.fields.requirements
        # A namespace's objects are the keys under its prefix.
        self.key_prefix = rt.prefix(self.namespace) if self.namespace else ""

    def admits(self, e: Entry) -> bool:
        """The same predicate on a watch cache entry, from what it keeps (no decoding)."""
        if self.key_prefix and not e.key.startswith(self.key_prefix):
            return False
        if self.trivial:
            return True
        return self.labels.matches(e.labels) and (
            not self.fields.requirements or self.fields.matches(e.fields(self.rt.fields)))

    def __call__(self, obj: dict) -> bool:
        md = obj.get("metadata") or {}
        if self.namespace and md.get("namespace") != self.namespace:
            return False
        if self.trivial:
            return True
        return self.labels.matches(md.get("labels") or {}) and self.fields.matches(self.rt.fields(obj))


CONTINUE_TOO_OLD = ("The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter, or use the continue "
                    "token in this response to retrieve the remainder of the results.")


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
    def __init__(self, store: Store, cache: WatchCache):
        self.store = store
        self.cache = cache
        # Allocations a kind's writes make outside its object (a Service's ClusterIP and
        # NodePorts: apiserver/allocators.py), by plural: before_create(obj, dry_run=)
        # -> undo; before_update(new, old, dry_run=) -> (undo, commit); after_delete(obj).
        # undo runs when the write is not stored, commit once it is.
        self.allocations: dict[str, Any] = {}
        # Admission plugins turned off (--disable-admission-plugins), by name.
        self.disabled_admission: frozenset[str] = frozenset()

    # -- reads ----------------------------------------------------------------------

    async def get(self, rt: ResourceType, namespace: str, name: str) -> dict:
        kv = await self.store.get(rt.key(namespace, name))
        if kv is None:
            raise errors.not_found(rt.group_resource, name)
        return rt.to_served(load(kv.value, kv.mod_revision))

    async def list(self, rt: ResourceType, sel: Selection, *, limit: int = 0,
                   continue_token: str = "", resource_version: str | None = None,
                   rv_match: str = "") -> tuple[list[Entry], int, str, int | None]:
        """-> (entries, list revision, continue token, remaining count or None)."""
        entries, revision, token, remaining = await self._list(
            rt, sel, limit=limit, continue_token=continue_token,
            resource_version=resource_version, rv_match=rv_match)
        return served_entries(rt, entries), revision, token, remaining

    async def _list(self, rt: ResourceType, sel: Selection, *, limit: int,
                    continue_token: str, resource_version: str | None,
                    rv_match: str) -> tuple[list[Entry], int, str, int | None]:
        if continue_token:
            if resource_version not in (None, ""):
                raise errors.BadRequest("specifying resource version is not allowed when using continue")
            revision, start = _decode_continue(continue_token)
            if self.cache.ready.is_set() and (self.cache.revision == revision
                                              or await self._cache_holds(rt, sel, revision, start)):
                return self._page(rt, sel, limit, revision, start)
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
        return self._page(rt, sel, limit, self.cache.revision, "")

    def _page(self, rt: ResourceType, sel: Selection, limit: int, revision: int, start: str):
        """A page from the cache: reads only the page's objects (and the selector's
        misses), from the namespace's range of keys onwards from `start`. As Kubernetes'
        cacher: a continue token only if another object matches; remainingItemCount only
        without a selector."""
        out: list[Entry] = []
        fetched = 0
        scan = self.cache.scan(rt, sel.namespace, start)
        for e in scan:
            fetched += 1
            if sel.admits(e):
                out.append(e)
                if limit and len(out) == limit:
                    break
        token, rest = "", None
        if limit and len(out) == limit:
            after = out[-1].key + "\x00"
            if sel.trivial:
                rest = self.cache.count(rt, sel.namespace, after)
                more = rest > 0
            else:
                more = False
                for e in scan:
                    fetched += 1
                    if sel.admits(e):
                        more = True
                        break
            if more:
                token = _encode_continue(revision, after)
            else:
                rest = None
        list_metrics(rt, fetched, len(out))
        return out, revision, token, rest

    async def _cache_holds(self, rt: ResourceType, sel: Selection, revision: int, start: str) -> bool:
        """Whether the cache, though it has moved past a continue token's revision, still
        holds the rest of that list as it was then: no write since touched the range (in
        a live cluster Leases and other namespaces' objects change all the time, and etcd
        serving every such page cost 5 to 15x the cache's, growing with the cluster).
        As Kubernetes' cacher serves continue tokens from its snapshots. An expired token
        is still 410 Gone, as etcd answers: one key read at the revision checks it."""
        if not self.cache.unchanged_since(rt, revision, sel.namespace, start):
            return False
        try:
            await self.store.list(start or rt.prefix(sel.namespace), revision=revision, limit=1)
        except Compacted:
            raise errors.Gone(CONTINUE_TOO_OLD) from None
        return True

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
                raise errors.Gone(CONTINUE_TOO_OLD) from None
            revision = page.revision
            for kv in page.items:
                e = decode(kv.key, kv.value, kv.mod_revision, rt.fields)
                if sel.admits(e):
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
        w = self.cache.watch(rt, sel.admits, after=rv, bookmarks=bookmarks)
        try:
            while batch := await w.next_batch():
                yield [(k, served_entry(rt, e) if isinstance(e, Entry) else e) for k, e in batch]
        finally:
            self.cache.unwatch(rt, w)

    async def _watch_etcd(self, rt, sel, rv):
        """A watch older than the cache's history, read straight from etcd's history."""
        stream = self.store.watch(rt.prefix(sel.namespace), rv + 1)
        try:
            async for batch in stream:
                out = []
                for ev in batch:
                    old = decode(ev.key, ev.prev_value, ev.revision, rt.fields) if ev.prev_value else None
                    if ev.type == "DELETE":
                        if old is not None and sel.admits(old):
                            out.append(("DELETED", old))
                        continue
                    new = decode(ev.key, ev.value, ev.revision, rt.fields)
                    was, now_ = old is not None and sel.admits(old), sel.admits(new)
                    if now_:
                        out.append((("MODIFIED" if was else "ADDED"), new))
                    elif was:
                        out.append(("DELETED", new))
                if out:
                    yield [(k, served_entry(rt, e)) for k, e in out]
        except Compacted as exc:
            yield [("ERROR", errors.Gone(f"too old resource version: {rv} ({exc.compact_revision})"))]
        finally:
            await stream.aclose()

    # -- writes ---------------------------------------------------------------------

    async def guaranteed_update(self, rt: ResourceType, key: str, try_update: TryUpdate, *,
                                cached: bool = False,
                                opts: WriteOptions = WriteOptions()) -> tuple[dict, bool]:
        """Read the object at `key`, ask `try_update(current, revision)` what it should
        become, and swap it in if etcd still holds that revision; on a lost swap, read
        again and retry (with jittered back-off), as k8s.io/apiserver's GuaranteedUpdate.

        try_update gets a private copy (it may change it) and returns the object to
        store, or `Removed` to delete the key; it raises APIError for the client's
        mistakes, which end the write.
        -> (the object as stored, or as removed, and whether it was removed). The answer
        to a no-op keeps the current resourceVersion, as in Kubernetes.

        cached=True starts from the watch cache's copy, which may be behind etcd: that
        saves an etcd read per write, and is safe because every outcome other than a
        successful swap (an error, nothing to do) is decided again on etcd's copy. A dry
        run has no swap to check its answer, so it always reads etcd. Warnings an attempt
        added to `opts.warnings` are dropped when that attempt is retried."""
        name = key.rpartition("/")[2]
        said = len(opts.warnings) if opts.warnings is not None else 0
        for attempt in range(-1 if cached and not opts.dry_run else 0, WRITE_ATTEMPTS):
            await _contended(attempt)
            if opts.warnings is not None:
                del opts.warnings[said:]
            from_cache = attempt < 0
            current = await self._current(rt, key, cached=from_cache)
            if current is None:
                raise errors.not_found(rt.group_resource, name)
            raw, revision, stale = current
            old = load(raw, revision)  # kept as read, to tell a no-op
            alloc = self.allocations.get(rt.plural)
            try:
                new = try_update(rt.to_served(load(raw, revision)), revision)
                if opts.admit is not None:
                    await opts.admit(new.obj if isinstance(new, Removed) else new, rt.to_served(old))
                if alloc is not None and not isinstance(new, Removed) and not from_cache:
                    # Allocating is a write: done only on etcd's copy, never on a guess.
                    undo, commit = await alloc.before_update(new, old, dry_run=opts.dry_run)
                elif alloc is not None and not isinstance(new, Removed):
                    continue  # judge again on etcd's copy, where it may allocate
            except errors.APIError:
                if from_cache:
                    continue  # judged on a copy that may be behind: judge again on etcd's
                raise
            if isinstance(new, Removed):
                if opts.dry_run:
                    return with_rv(new.obj, revision), True
                ok, result = await self.store.delete(key, revision)
                if ok:
                    if alloc is not None:
                        await alloc.after_delete(new.obj)
                    return with_rv(new.obj, result.mod_revision), True
                continue
            new["metadata"].pop("resourceVersion", None)
            if opts.dry_run:
                if alloc is not None:
                    await undo()
                return with_rv(new, revision), False
            stored = rt.to_storage(new)
            if _unchanged(old, stored) and not stale:  # a stale value is re-written (encryption)
                if alloc is not None:
                    await undo()
                if from_cache:
                    continue
                return with_rv(new, revision), False
            ok = False
            try:
                ok, result = await self.store.update(key, encode(stored), revision)
            finally:
                if alloc is not None:
                    await (commit() if ok else undo())
            if ok:
                return with_rv(new, result), False
        raise errors.conflict(rt.plural, name, rt.group, why="too many concurrent writers")

    async def _current(self, rt: ResourceType, key: str, *,
                       cached: bool) -> tuple[bytes, int, bool] | None:
        """(the serialized object at `key` (with `cached`, the watch cache's), its
        revision, and whether storage calls it stale), None if there is none. The cache
        knows nothing of staleness: a no-op judged on its copy is judged again on etcd's."""
        if cached:
            entry = self.cache.get(rt, key)
            if entry is not None:
                return entry.raw, entry.revision, False
        kv = await self.store.get(key)
        return None if kv is None else (kv.value, kv.mod_revision, kv.stale)

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

    def _validate(self, rt: ResourceType, obj: dict, opts: WriteOptions, *,
                  old: dict | None = None, strategy: Any = None) -> None:
        strategy = strategy or rt.strategy
        causes = strategy.schema_causes(rt, obj)
        unknown = [c for c in causes if c.get("message", "").startswith("unknown field")]
        if unknown and opts.field_validation != "Strict":
            for c in unknown:
                _drop_path(obj, c["field"])
                if opts.warnings is not None and opts.field_validation != "Ignore":
                    opts.warnings.append(c["message"])
            causes = [c for c in causes if c not in unknown]
        causes += strategy.validate(rt, obj, old)
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

    async def _admit(self, rt: ResourceType, namespace: str, obj: dict, *, name: str) -> None:
        """Mutating admission of a create (after defaulting, before validation, as in
        kube-apiserver): the strategy names the objects it reads, read here."""
        if rt.strategy.admission_plugin in self.disabled_admission:
            return
        refs = rt.strategy.admission_refs(obj)
        if not refs:
            return
        found: dict[tuple[str, str], dict | None] = {}
        for resource, ref_name in refs:
            ref_rt = by_plural(resource)
            if not ref_name:  # a cluster-scoped collection, read whole (DefaultStorageClass)
                if self.cache.ready.is_set():
                    items = [e.obj for e in self.cache.entries(ref_rt)]
                else:
                    listed = await self.store.list(ref_rt.prefix())
                    items = [orjson.loads(kv.value) for kv in listed.items]
                found[(resource, "")] = {"items": items}
                continue
            key = ref_rt.key(namespace if ref_rt.namespaced else "", ref_name)
            attempts = rt.strategy.admission_attempts((resource, ref_name))
            pause = random.uniform(0.1, 0.2)
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(pause)  # upstream's retry interval for an expected object
                entry = self.cache.get(ref_rt, key)
                if entry is not None:
                    found[(resource, ref_name)] = entry.obj
                    break
                kv = await self.store.get(key)
                found[(resource, ref_name)] = orjson.loads(kv.value) if kv is not None else None
                if kv is not None:
                    break
        rt.strategy.admit_create(obj, found, name=name)

    async def create(self, rt: ResourceType, namespace: str, body: Any,
                     opts: WriteOptions = WriteOptions()) -> dict:
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
            rt.strategy.prepare_for_create(obj)
            rt.strategy.set_requestor(obj, opts.user)
            defaults.apply_defaults(obj, rt.kind)
            await self._admit(rt, namespace, obj, name=md["generateName"] if generated else md["name"])
            self._validate(rt, obj, opts)
            if opts.admit is not None:
                await opts.admit(obj, None)
            if opts.field_manager:
                ssa.record_update(None, obj, rt, manager=opts.field_manager, subresource=None, now=now())
            alloc = self.allocations.get(rt.plural)
            undo = await alloc.before_create(obj, dry_run=opts.dry_run) if alloc else None
            if opts.dry_run:
                if undo is not None:
                    await undo()
                return obj
            ok = False
            try:
                ok, result = await self.store.create(rt.key(namespace, md["name"]),
                                                     encode(rt.to_storage(obj)))
            finally:
                if not ok and undo is not None:
                    await undo()
            if ok:
                return with_rv(obj, result)
        raise errors.already_exists(rt.group_resource, md["name"])

    def _updated(self, rt: ResourceType, old: dict, new: dict, opts: WriteOptions,
                 subresource: str | None) -> dict | Removed:
        """`new`, sent by the client over `old`, as it is to be stored: what the client may
        not change through this endpoint carried over, defaulted, validated, its fields'
        managers recorded; `Removed` once a deletion's last finalizer has gone."""
        strategy = rt.strategy.for_subresource(subresource)
        if subresource is not None:  # status, or a kind's own (a CSR's approval)
            new = strategy.prepare_for_status_update(new, old)
        else:
            omd, nmd = old["metadata"], new["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation"):
                if k in omd:
                    nmd[k] = omd[k]
                else:
                    nmd.pop(k, None)
            if nmd.get("managedFields") is None and omd.get("managedFields"):
                nmd["managedFields"] = omd["managedFields"]  # not sent: kept, as in Kubernetes
            # Defaulted before the strategy compares specs, as Kubernetes defaults on decode:
            # a write that leaves out what defaults fill in (an atomic list re-sent by
            # `kubectl apply`) is no spec change and bumps no generation.
            defaults.apply_defaults(new, rt.kind)
            rt.strategy.prepare_for_update(new, old)
        new["metadata"].pop("resourceVersion", None)
        defaults.apply_defaults(new, rt.kind)
        self._validate(rt, new, opts, old=old, strategy=strategy)
        if opts.field_manager:
            ssa.record_update(old, new, rt, manager=opts.field_manager, subresource=subresource,
                              now=now())
        return Removed(new) if _finished(rt, new) else new

    async def update(self, rt: ResourceType, namespace: str, name: str, body: Any,
                     opts: WriteOptions = WriteOptions(), *, subresource: str | None = None) -> dict:
        md = self._check_identity(rt, body, namespace, name)
        md["name"] = name
        precondition = _parse_rv(md.get("resourceVersion"))
        sent = orjson.dumps(body)  # each attempt prepares its own copy of the body

        def try_update(old: dict, revision: int) -> dict | Removed:
            if precondition is not None and precondition != revision:
                raise errors.conflict(rt.plural, name, rt.group)
            return self._updated(rt, old, orjson.loads(sent), opts, subresource)

        obj, _ = await self.guaranteed_update(rt, rt.key(namespace, name), try_update, opts=opts)
        return obj

    async def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str,
                    body: Any, opts: WriteOptions = WriteOptions(), *,
                    subresource: str | None = None) -> dict:
        def try_update(old: dict, revision: int) -> dict | Removed:
            # As in Kubernetes, the patch applies to the current object, resourceVersion
            # included: a version in the result that is not the current one can only
            # come from the patch, and is a precondition that fails.
            new = apply_patch(rt, old, patch_type, body)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise errors.BadRequest(f"the patch produced an object that is not a {rt.kind}")
            pinned = _parse_rv(new["metadata"].get("resourceVersion"))
            if pinned is not None and pinned != revision:
                raise errors.conflict(rt.plural, name, rt.group)
            uid = new["metadata"].get("uid")
            if uid and uid != old["metadata"].get("uid"):
                raise errors.conflict(rt.plural, name, rt.group, why=(
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                    f"{old['metadata'].get('uid')}"))
            self._check_identity(rt, new, namespace, name)
            return self._updated(rt, old, new, opts, subresource)

        obj, _ = await self.guaranteed_update(rt, rt.key(namespace, name), try_update,
                                              cached=True, opts=opts)
        return obj

    async def apply(self, rt: ResourceType, namespace: str, name: str, body: Any,
                    opts: WriteOptions, *, subresource: str | None = None) -> tuple[dict, bool]:
        """Server-side apply (`apiserver.apply`) as opts.field_manager: -> (object, created)."""
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise errors.BadRequest("an apply configuration must be an object with apiVersion and kind")
        md = self._check_identity(rt, body, namespace, name)
        if md.get("managedFields") is not None:
            raise errors.BadRequest("metadata.managedFields must be nil")
        md["name"] = name
        precondition = _parse_rv(md.get("resourceVersion"))
        applied = replace(opts, field_manager="")  # ssa.apply records the managers itself

        def try_update(live: dict, revision: int) -> dict | Removed:
            if precondition is not None and precondition != revision:
                raise errors.conflict(rt.plural, name, rt.group)
            new = ssa.apply(live, body, rt, manager=opts.field_manager, force=opts.force,
                            subresource=subresource, now=now())
            return self._updated(rt, live, new, applied, subresource)

        for _ in range(WRITE_ATTEMPTS):
            try:
                obj, _ = await self.guaranteed_update(rt, rt.key(namespace, name), try_update,
                                                      opts=applied)
                return obj, False
            except errors.NotFound:
                if subresource is not None or precondition is not None:
                    raise
            obj = ssa.apply(None, body, rt, manager=opts.field_manager, force=opts.force,
                            subresource=None, now=now())
            try:
                return await self.create(rt, namespace, obj, applied), True
            except errors.AlreadyExists:
                continue  # created meanwhile: apply to it
        raise errors.conflict(rt.plural, name, rt.group, why="too many concurrent writers")

    async def delete(self, rt: ResourceType, namespace: str, name: str, options: dict,
                     opts: WriteOptions = WriteOptions()) -> tuple[dict, bool]:
        """-> (object, gone): gone is False while finalizers or a grace period hold it."""
        pre = options.get("preconditions") or {}

        def try_update(obj: dict, revision: int) -> dict | Removed:
            md = obj["metadata"]
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise errors.conflict(rt.plural, name, rt.group,
                                      why=f"Precondition failed: UID in precondition: {pre['uid']}, "
                                          f"UID in object meta: {md.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
                raise errors.conflict(rt.plural, name, rt.group,
                                      why=f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                          f"{md['resourceVersion']}")
            return self._deletion_state(rt, obj, options)

        return await self.guaranteed_update(rt, rt.key(namespace, name), try_update, opts=opts)

    def _deletion_state(self, rt: ResourceType, obj: dict, options: dict) -> dict | Removed:
        """The object as it should be after this delete request, or Removed to remove it
        now: k8s.io/apiserver's BeforeDelete, with the kind's strategy deciding the grace
        period and any finalization of its own."""
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
        grace = rt.strategy.grace_period(obj, grace)
        current = md.get("deletionGracePeriodSeconds")
        if current is not None and grace > current:
            grace = current  # a grace period can only be shortened
        if grace > 0:
            nmd["deletionGracePeriodSeconds"] = grace
            if current is None or grace < current:
                nmd["deletionTimestamp"] = later(grace)
            return new
        if rt.strategy.before_delete(new):
            return new
        if finalizers:
            nmd.setdefault("deletionTimestamp", now())
            if rt.strategy.graceful:
                nmd["deletionGracePeriodSeconds"] = 0  # no longer waiting: the grace is over
            else:
                nmd.setdefault("deletionGracePeriodSeconds", 0)
            return new
        return Removed(obj)

    async def delete_collection(self, rt: ResourceType, sel: Selection, options: dict,
                                opts: WriteOptions = WriteOptions()) -> tuple[list[dict], int]:
        entries, revision, _, _ = await self.list(rt, sel)
        out = []
        for e in entries:
            md = e.obj["metadata"]
            try:
                obj, _ = await self.delete(rt, md.get("namespace", ""), md["name"], options, opts)
                out.append(obj)
            except errors.NotFound:
                pass
        return out, revision

    # -- subresources ---------------------------------------------------------------

    async def bind(self, rt: ResourceType, namespace: str, name: str, binding: Any,
                   opts: WriteOptions = WriteOptions()) -> None:
        """`pods/binding`: the kind's strategy assigns the node."""
        if not isinstance(binding, dict) or not isinstance(binding.get("target"), dict):
            raise errors.BadRequest("the body of the request must be a Binding with a target")
        node = binding["target"].get("name")
        if not node or not isinstance(node, str):
            raise errors.invalid("Binding", name, [{"reason": "FieldValueRequired",
                                                    "field": "target.name", "message": "Required value"}])
        await self.guaranteed_update(rt, rt.key(namespace, name),
                                     lambda pod, _: rt.strategy.bind(pod, binding, now=now()),
                                     cached=True, opts=opts)

    async def get_scale(self, rt: ResourceType, namespace: str, name: str) -> dict:
        return _scale_of(rt, await self.get(rt, namespace, name))

    async def update_scale(self, rt: ResourceType, namespace: str, name: str, body: Any,
                           opts: WriteOptions = WriteOptions(), *,
                           patch_type: str | None = None) -> dict:
        """`/scale`: a Scale replaced (PUT) or patched (any patch type Kubernetes takes
        there) sets the object's spec.replicas."""
        if patch_type is None and not isinstance(body, dict):
            raise errors.BadRequest("the body of the request must be a Scale object")
        scaled = replace(opts, field_validation="")

        def try_update(obj: dict, revision: int) -> dict | Removed:
            scale = body if patch_type is None else \
                apply_patch(_SCALE, _scale_of(rt, obj), patch_type, body)
            replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid("Scale", name, [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                                      "message": f"Invalid value: {replicas!r}: must be greater "
                                                                 "than or equal to 0"}], group="autoscaling")
            pinned = _parse_rv((scale.get("metadata") or {}).get("resourceVersion"))
            if pinned is not None and pinned != revision:
                raise errors.conflict(rt.plural, name, rt.group)
            new = copy.deepcopy(obj)
            if hasattr(rt.strategy, "set_replicas"):  # a custom resource's specReplicasPath
                rt.strategy.set_replicas(new, replicas)
            else:
                new.setdefault("spec", {})["replicas"] = replicas
            return self._updated(rt, obj, new, scaled, None)

        obj, _ = await self.guaranteed_update(rt, rt.key(namespace, name), try_update, opts=opts)
        return _scale_of(rt, obj)

    async def ensure_system_namespaces(self) -> None:
        ns = by_plural("namespaces")
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(ns, "", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name}})
            except errors.AlreadyExists:
                pass


def served_entry(rt: ResourceType, e: Entry) -> Entry:
    """A cache entry at `rt`'s version: itself if stored at it, else a converted copy."""
    if e.api_version == rt.api_version:
        return e
    return Entry.of(e.key, rt.to_served(e.obj), e.revision)


def served_entries(rt: ResourceType, entries: list[Entry]) -> list[Entry]:
    return [served_entry(rt, e) for e in entries]


def _scale_of(rt: ResourceType, obj: dict) -> dict:
    """The Scale of `obj`: by its strategy's own paths (custom resources), else spec.replicas."""
    own = getattr(rt.strategy, "to_scale", None)
    return own(obj) if own is not None else to_scale(obj)


def to_scale(obj: dict) -> dict:
    """An autoscaling/v1 Scale of a Deployment, ReplicaSet, StatefulSet or
    ReplicationController; `status.selector` is the selector as a string, in
    labels.Selector's canonical form (requirements by key, set values sorted), as
    Kubernetes' scale subresources write it and the HPA reads it."""
    md = obj["metadata"]
    sel = ((obj.get("spec") or {}).get("selector") or {})
    try:
        if "matchLabels" not in sel and "matchExpressions" not in sel:
            selector = str(labels.from_set(sel))  # a ReplicationController's is a plain map
        else:
            selector = str(labels.from_label_selector(sel))
    except errors.APIError:
        selector = ""  # validation keeps a bad selector out; none is safer than a wrong one
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                            "creationTimestamp") if k in md},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": selector}}


def apply_patch(rt: kinds.Kind, old: dict, patch_type: str, body: Any) -> Any:
    if patch_type == "application/merge-patch+json":
        if not isinstance(body, dict):
            raise errors.BadRequest("a merge patch must be a JSON object")
        return patches.merge_patch(old, body)
    if patch_type == "application/json-patch+json":
        return patches.json_patch(old, body)
    if patch_type == "application/strategic-merge-patch+json":
        if not isinstance(body, dict):
            raise errors.BadRequest("a strategic merge patch must be a JSON object")
        return patches.strategic_merge_patch(old, body, rt.kind, rt.group)
    raise errors.UnsupportedMediaType(f"the media type {patch_type!r} is not supported for patch")


def _finished(rt: ResourceType, obj: dict) -> bool:
    """An object marked for deletion whose last finalizer has just gone is removed."""
    md = obj["metadata"]
    return bool(md.get("deletionTimestamp")) and not md.get("finalizers") \
        and rt.strategy.deletion_finished(obj)


def _unchanged(old: dict, new: dict) -> bool:
    """Whether `new` (without a resourceVersion) is what `old` already holds."""
    stored = dict(old)
    stored["metadata"] = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
    return stored == new


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
