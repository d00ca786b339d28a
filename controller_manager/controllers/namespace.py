"""The namespace controller: a deleted namespace is emptied, then finalized (Kubernetes'
pkg/controller/namespace and its namespaced_resources_deleter).

What it guarantees
- A namespace with a deletionTimestamp and the `kubernetes` finalizer in
  `spec.finalizers` has every object of every namespaced kind the client knows
  deleted (a delete-collection per kind, or one delete per object where the server
  refuses collections); the finalizer is removed through `namespaces/<name>/finalize`
  only once a fresh list of every kind finds nothing left. The API server then
  removes the namespace (once no other finalizer remains).
- Objects that linger (pods in their grace period, objects held by finalizers) make
  it look again later: after half the longest remaining grace period plus a second,
  as Kubernetes does, and with backoff after errors.
- While it works, `status.conditions` report it as Kubernetes does:
  NamespaceDeletionDiscoveryFailure, NamespaceDeletionGroupVersionParsingFailure,
  NamespaceDeletionContentFailure, NamespaceContentRemaining,
  NamespaceFinalizersRemaining (written only when they change).
- The namespace itself is read with a live GET before acting, not from the cache.

Content is read and deleted with live requests, not informers: this runs rarely and
must not act on a stale view of what is left.

Concurrency: one asyncio loop; a namespace is never handled by two workers at once.
"""
from __future__ import annotations

import logging
import math

from client.rest import Resource
from controller_manager.controller import Controller, NoOptions
from controller_manager.controller_utils import parse_time, rfc3339, stored_kinds, utcnow
from machinery import errors

log = logging.getLogger("minik8s.controller.namespace")

FINALIZER = "kubernetes"


class NamespaceController(Controller):
    name = "namespace"

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: NoOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.namespaces = self.watch(factory.informer("namespaces"))
        self._no_collection: set[tuple[str, str]] = set()  # (group, plural)s the server refuses deletecollection for

    async def reconcile(self, key) -> None:
        cached = self.namespaces.store.get(key)
        if cached is None or not cached["metadata"].get("deletionTimestamp"):
            return
        try:
            ns = await self.client.get("namespaces", key)
        except errors.NotFound:
            return
        if not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or ()):
            return  # finalized already: other finalizers (or the server) finish the job
        await self._discover()
        failures = await self._delete_content(key)
        remaining, finalizers, estimate = await self._remaining(key)
        ns = await self._set_conditions(ns, failures, remaining, finalizers)
        if failures:
            raise RuntimeError(f"deleting content of namespace {key}: {'; '.join(failures)}")
        if remaining:
            # An expected wait, not a failure: look again after half the longest grace
            # period left, plus a second (Kubernetes' worker does the same).
            log.info("%s: namespace %s still has %s; looking again in %.0fs", self.name, key,
                     ", ".join(f"{n} {k}" for k, n in sorted(remaining.items())), estimate / 2 + 1)
            self.queue.add_after(key, estimate / 2 + 1)
            return
        log.info("%s: namespace %s is empty, finalizing", self.name, key)
        finalized = {**ns, "spec": {**(ns.get("spec") or {}), "finalizers": [
            f for f in ns["spec"]["finalizers"] if f != FINALIZER]}}
        await self.client.update(finalized, subresource="finalize")

    async def _discover(self) -> None:
        """Learn the kinds served now (custom resources come and go), as Kubernetes'
        namespace controller reads discovery on every pass."""
        discover = getattr(self.client, "discover", None)
        if discover is None:  # a client without discovery (tests' recording clients)
            return
        try:
            await discover()
        except (errors.APIError, OSError) as e:
            log.warning("%s: discovery failed: %s", self.name, e)

    def _namespaced_kinds(self) -> list[Resource]:
        return [r for r in stored_kinds(self.client.resources) if r.namespaced]

    async def _delete_content(self, namespace: str) -> list[str]:
        failures = []
        for r in self._namespaced_kinds():
            try:
                if (r.group, r.plural) not in self._no_collection:
                    try:
                        await self.client.delete_collection(r, namespace=namespace,
                                                            propagation_policy="Background")
                        continue
                    except errors.MethodNotAllowed:
                        self._no_collection.add((r.group, r.plural))
                for obj in (await self.client.list(r, namespace=namespace))["items"]:
                    if obj["metadata"].get("deletionTimestamp"):
                        continue
                    try:
                        await self.client.delete(r, obj["metadata"]["name"], namespace=namespace,
                                                 propagation_policy="Background")
                    except errors.NotFound:
                        pass
            except errors.NotFound:
                pass  # a kind no longer served (its CustomResourceDefinition went)
            except errors.APIError as exc:
                failures.append(f"{r.plural}: {exc.message}")
        return failures

    async def _remaining(self, namespace: str) -> tuple[dict[str, int], dict[str, int], float]:
        """(kind -> objects left, finalizer -> objects holding it, seconds to wait)."""
        remaining: dict[str, int] = {}
        finalizers: dict[str, int] = {}
        estimate = 0.0
        now = utcnow()
        for r in self._namespaced_kinds():
            try:
                items = (await self.client.list(r, namespace=namespace))["items"]
            except errors.NotFound:
                continue  # a kind no longer served
            if not items:
                continue
            remaining[f"{r.plural}.{r.group}" if r.group else r.plural] = len(items)
            for obj in items:
                md = obj["metadata"]
                for f in md.get("finalizers") or ():
                    finalizers[f] = finalizers.get(f, 0) + 1
                if r.plural == "pods":
                    # What is left of a pod's grace period (Kubernetes' estimate).
                    when = parse_time(md.get("deletionTimestamp"))
                    grace = md.get("deletionGracePeriodSeconds")
                    if when is not None:
                        estimate = max(estimate, (when - now).total_seconds())
                    elif grace:
                        estimate = max(estimate, float(grace))
                    else:
                        spec_grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds")
                        estimate = max(estimate, float(spec_grace or 0))
        return remaining, finalizers, max(0.0, math.ceil(estimate))

    async def _set_conditions(self, ns: dict, failures: list[str], remaining: dict[str, int],
                              finalizers: dict[str, int]) -> dict:
        def cond(type_: str, true: bool, reason_true: str, msg_true: str, reason_false: str,
                 msg_false: str) -> dict:
            return {"type": type_, "status": "True" if true else "False",
                    "reason": reason_true if true else reason_false,
                    "message": msg_true if true else msg_false}
        wanted = [
            cond("NamespaceDeletionDiscoveryFailure", False, "", "", "ResourcesDiscovered",
                 "All resources successfully discovered"),
            cond("NamespaceDeletionGroupVersionParsingFailure", False, "", "", "ParsedGroupVersions",
                 "All legacy kube types successfully parsed"),
            cond("NamespaceDeletionContentFailure", bool(failures), "ContentDeletionFailed",
                 "Failed to delete all resource types, " + "; ".join(failures),
                 "ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
            cond("NamespaceContentRemaining", bool(remaining), "SomeResourcesRemain",
                 "Some resources are remaining: " + ", ".join(
                     f"{k} has {n} resource instances" for k, n in sorted(remaining.items())),
                 "ContentRemoved", "All content successfully removed"),
            cond("NamespaceFinalizersRemaining", bool(finalizers), "SomeFinalizersRemain",
                 "Some content in the namespace has finalizers remaining: " + ", ".join(
                     f"{k} in {n} resource instances" for k, n in sorted(finalizers.items())),
                 "ContentHasNoFinalizers", "All content-preserving finalizers finished"),
        ]
        status = ns.get("status") or {}
        old = {c.get("type"): c for c in status.get("conditions") or ()}
        changed = False
        conditions = []
        for c in wanted:
            prev = old.get(c["type"])
            if prev is not None and all(prev.get(k) == c[k] for k in ("status", "reason", "message")):
                conditions.append(prev)
            else:
                conditions.append({**c, "lastTransitionTime": rfc3339(utcnow())})
                changed = True
        if not changed:
            return ns
        conditions += [c for t, c in old.items() if t not in {w["type"] for w in wanted}]
        return await self.client.update_status({**ns, "status": {**status, "conditions": conditions}})
