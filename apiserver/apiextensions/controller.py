"""The API server's own CRD controllers: what apiextensions-apiserver's naming,
establishing, finalizer and discovery controllers do, run by every API server on its
watch cache.

Guarantees
- Naming: a CRD's names are accepted unless another CRD of its group has already
  accepted one of them; then NamesAccepted is False with Kubernetes' reason
  (PluralConflict, SingularConflict, ShortNamesConflict, KindConflict, ListKindConflict)
  and message (`"Foo" is already in use`), and the names that do not clash are accepted.
- Establishing: once its names are accepted a CRD is Established
  (InitialNamesAccepted); a CRD that never had its names accepted is Established False
  (NotAccepted).
- Serving: every API server registers the served versions of each Established CRD in
  `apiserver.registry` as soon as its cache sees it, and unregisters them when the CRD
  goes or stops serving a version (ending the watches of its objects, which clients
  resume); nothing needs a restart. The server that writes Established registers the
  kind before anyone can read the condition; a starting server is not ready
  (`synced`) until every stored CRD has been handled. Custom resources are read from
  the cache whether or not their kind is registered yet.
- Deleting: a CRD marked for deletion (customresourcecleanup.apiextensions.k8s.io) has
  all its custom resources deleted (their own finalizers honoured); once none is left
  the finalizer goes, and with it the CRD. Meanwhile creates are refused (405).
- Storage version migration: when a CRD's storage version changes, objects stored at
  an older version are rewritten at the new one (what kube-storage-version-migrator
  does), after which status.storedVersions is the storage version alone.

Several API servers run this at once: every write is a compare-and-swap computed from
the stored CRD (`Resources.guaranteed_update`), so they agree, and a lost race only
costs a retry on the next event.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from apiserver import registry
from apiserver.apiextensions import crd as crds, definition as crd_kind
from apiserver.resources import Removed, Resources
from apiserver.timestamps import now
from machinery import errors

log = logging.getLogger("minik8s.apiserver.apiextensions")

_CONFLICTS = (("plural", "PluralConflict"), ("singular", "SingularConflict"),
              ("shortNames", "ShortNamesConflict"), ("kind", "KindConflict"),
              ("listKind", "ListKindConflict"))


def _m(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def names_and_condition(crd: dict, others: list[dict]) -> tuple[dict, tuple[str, str, str]]:
    """(accepted names, NamesAccepted (status, reason, message)) of `crd`, given the other
    CRDs: the naming controller's calculateNamesAndConditions."""
    spec = _m(crd.get("spec"))
    group, requested = spec.get("group"), _m(spec.get("names"))
    accepted = copy.deepcopy(_m(_m(crd.get("status")).get("acceptedNames")))
    resources: set[str] = set()
    kinds: set[str] = set()
    for other in others:
        if other["metadata"]["name"] == crd["metadata"]["name"] or _m(other.get("spec")).get("group") != group:
            continue
        names = _m(_m(other.get("status")).get("acceptedNames"))
        resources.update(n for n in (names.get("plural"), names.get("singular")) if n)
        resources.update(names.get("shortNames") or ())
        kinds.update(n for n in (names.get("kind"), names.get("listKind")) if n)
    problem: tuple[str, str] | None = None
    for field, reason in _CONFLICTS:
        want = requested.get(field)
        if field == "shortNames":
            clash = next((s for s in want or () if s in resources
                          and s not in (accepted.get("shortNames") or ())), None)
        elif field in ("kind", "listKind"):
            clash = want if want and want != accepted.get(field) and want in kinds else None
        else:
            clash = want if want and want != accepted.get(field) and want in resources else None
        if clash is not None:
            problem = problem or (reason, f'"{clash}" is already in use')
        elif want is not None:
            accepted[field] = want
    if "categories" in requested:
        accepted["categories"] = requested["categories"]
    if problem is None:
        return accepted, ("True", "NoConflicts", "no conflicts found")
    return accepted, ("False", *problem)


class CRDController:
    def __init__(self, resources: Resources):
        self.resources = resources
        self.cache = resources.cache
        self.rt = registry.by_plural("customresourcedefinitions")
        self.served: dict[str, tuple[str, list[registry.ResourceType]]] = {}  # name -> (rv, rows)
        self._tasks: dict[str, asyncio.Task] = {}
        self._main: asyncio.Task | None = None
        # Set once every CRD stored at start has been handled: the readyz check
        # crd-informer-synced (kube-apiserver's poststarthook/crd-informer-synced; the
        # health module takes no '/' in a name) waits for it.
        self.synced = asyncio.Event()

    async def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="crd-controller")

    async def stop(self) -> None:
        for t in [self._main, *self._tasks.values()]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in [self._main, *self._tasks.values()] if t is not None),
                             return_exceptions=True)
        for name in list(self.served):
            self._unregister(name)

    # -- the feed ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.cache.listed.wait()
                w = self.cache.watch(self.rt, lambda obj: True, after=None, bookmarks=False)
                try:
                    current = {e.obj["metadata"]["name"] for e in self.cache.entries(self.rt)}
                    for name in set(self.served) - current:  # gone while this watch was down
                        self._unregister(name)
                    initial = len(w.queue)  # the snapshot: one ADDED per stored CRD
                    if not initial:
                        self.synced.set()
                    while batch := await w.next_batch():
                        for kind, entry in batch:
                            if kind != "BOOKMARK":
                                await self._sync(kind, entry.obj)
                            initial -= 1
                            if initial == 0:
                                self.synced.set()
                finally:
                    self.cache.unwatch(self.rt, w)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug here must not stop serving CRDs
                log.exception("CRD controller failed; restarting its watch")
                await asyncio.sleep(1)

    async def _sync(self, kind: str, crd: dict) -> None:
        await self._sync_one(kind, crd)
        # The names one CRD holds or lets go decide its group's others (the naming
        # controller requeues the whole group): those still waiting are judged again.
        group = _m(crd.get("spec")).get("group")
        for e in self.cache.entries(self.rt):
            other = e.obj
            if (other["metadata"]["name"] != crd["metadata"]["name"]
                    and _m(other.get("spec")).get("group") == group
                    and not crd_kind.is_true(other, "NamesAccepted")
                    and not other["metadata"].get("deletionTimestamp")):
                await self._sync_one("MODIFIED", other)

    async def _sync_one(self, kind: str, crd: dict) -> None:
        name = crd["metadata"]["name"]
        if kind == "DELETED":
            self._unregister(name)
            return
        terminating = bool(crd["metadata"].get("deletionTimestamp"))
        if not terminating:
            # Registered from the object as written, before its event comes back: this
            # server serves the kind from the moment anyone can read it Established.
            crd = await self._write_status(name) or crd
        if crd_kind.is_true(crd, "Established"):
            self._register(crd)
        else:
            self._unregister(name)
        if terminating and crd_kind.FINALIZER in (crd["metadata"].get("finalizers") or ()):
            self._spawn(f"cleanup/{name}", self._cleanup(name))
        elif not terminating and crd_kind.is_true(crd, "Established"):
            stored = _m(crd.get("status")).get("storedVersions") or []
            if [v for v in stored if v != crd_kind.storage_version(crd)]:
                self._spawn(f"migrate/{name}", self._migrate(name))

    def _spawn(self, key: str, work: Any) -> None:
        task = self._tasks.get(key)
        if task is not None and not task.done():
            work.close()
            return
        self._tasks[key] = asyncio.create_task(work, name=key)

    # -- registration --------------------------------------------------------------------

    def _register(self, crd: dict) -> None:
        name, rv = crd["metadata"]["name"], crd["metadata"].get("resourceVersion", "")
        if name in self.served and self.served[name][0] == rv:
            return
        rows = crds.resource_types(crd)
        # All out, then all in, in priority order: no await between, so no request sees
        # the kind missing.
        old = self.served.get(name, ("", []))[1]
        for r in old:
            registry.unregister(r)
        if {r.version for r in old} - {r.version for r in rows}:
            self.cache.close_watchers(old[0])  # a version went: its watches end
        registered = []
        for r in rows:
            try:
                registry.register(r)
                registered.append(r)
            except ValueError as e:
                log.warning("CRD %s: %s", name, e)
        self.served[name] = (rv, registered)

    def _unregister(self, name: str) -> None:
        _, rows = self.served.pop(name, ("", []))
        for r in rows:
            registry.unregister(r)
        if rows:
            self.cache.close_watchers(rows[0])  # as Kubernetes ends them with the CRD's storage

    # -- naming and establishing -----------------------------------------------------------

    async def _write_status(self, name: str) -> dict | None:
        others = [e.obj for e in self.cache.entries(self.rt)]

        def update(crd: dict, revision: int) -> dict:
            accepted, (status, reason, message) = names_and_condition(crd, others)
            stamp = now()
            crd.setdefault("status", {})["acceptedNames"] = accepted
            crd_kind.set_condition(crd, "NamesAccepted", status, reason, message, stamp)
            if status == "True":
                if not crd_kind.is_true(crd, "Established"):
                    crd_kind.set_condition(crd, "Established", "True", "InitialNamesAccepted",
                                       "the initial names have been accepted", stamp)
            elif not crd_kind.is_true(crd, "Established"):
                crd_kind.set_condition(crd, "Established", "False", "NotAccepted",
                                   "not all names are accepted", stamp)
            return crd

        return await self._update(name, update)

    async def _update(self, name: str, fn: Any) -> dict | None:
        try:
            obj, _ = await self.resources.guaranteed_update(self.rt, self.rt.key("", name), fn,
                                                            cached=True)
            return obj
        except errors.NotFound:
            return None
        except errors.APIError as e:
            log.warning("CRD %s: status not written: %s", name, e.message)
            return None

    # -- deletion (the finalizer controller) ---------------------------------------------------

    def _storage_row(self, crd: dict) -> registry.ResourceType:
        stored = crd_kind.storage_version(crd)
        rows = crds.resource_types({**crd, "spec": {**crd["spec"], "versions": [
            {**v, "served": True} for v in crd["spec"].get("versions") or [] if v.get("name") == stored]}})
        return rows[0]

    async def _cleanup(self, name: str) -> None:
        def progress(crd: dict, revision: int) -> dict:
            crd_kind.set_condition(crd, "Terminating", "True", "InstanceDeletionInProgress",
                               "CustomResource deletion is in progress", now())
            return crd

        crd = await self._update(name, progress)
        while crd is not None:
            row = self._storage_row(crd)
            left = self.cache.entries(row)
            for e in left:
                md = e.obj["metadata"]
                if md.get("deletionTimestamp"):
                    continue
                try:
                    await self.resources.delete(row, md.get("namespace", ""), md["name"], {})
                except errors.NotFound:
                    pass
                except errors.APIError as err:
                    log.warning("CRD %s: deleting %s: %s", name, md["name"], err.message)
            if not left:
                break
            # Wait for the cache to move (an instance's finalizers going, its removal).
            await self.cache.wait_for(self.cache.revision + 1, timeout=5)
            entry = self.cache.get(self.rt, self.rt.key("", name))
            crd = entry.obj if entry is not None else None
        else:
            return

        def finish(crd: dict, revision: int) -> dict | Removed:
            md = crd["metadata"]
            md["finalizers"] = [f for f in md.get("finalizers") or [] if f != crd_kind.FINALIZER]
            crd_kind.set_condition(crd, "Terminating", "True", "InstanceDeletionCompleted",
                               "removed all instances", now())
            if not md["finalizers"]:
                return Removed(crd)
            return crd

        await self._update(name, finish)

    # -- storage version migration -----------------------------------------------------------------

    async def _migrate(self, name: str) -> None:
        entry = self.cache.get(self.rt, self.rt.key("", name))
        if entry is None:
            return
        crd = entry.obj
        row = self._storage_row(crd)
        target = row.storage_api_version
        for e in self.cache.entries(row):
            if e.api_version == target:
                continue
            md = e.obj["metadata"]
            try:  # a no-op write stores the object at the storage version
                await self.resources.guaranteed_update(row, e.key, lambda obj, rev: obj)
            except errors.NotFound:
                pass
            except errors.APIError as err:
                log.warning("CRD %s: migrating %s: %s", name, md["name"], err.message)
                return
        stored = crd_kind.storage_version(crd)

        def done(crd: dict, revision: int) -> dict:
            if crd_kind.storage_version(crd) == stored:
                crd.setdefault("status", {})["storedVersions"] = [stored]
            return crd

        await self._update(name, done)
