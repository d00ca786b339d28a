"""Pods: graceful deletion (a bound, running pod is kept, marked, until its kubelet has
stopped it and deletes it with grace 0), binding to a node (the scheduler's only write),
as Kubernetes' pod strategy and BindingREST do; and the ServiceAccount admission plugin's
imagePullSecrets step: a pod created without imagePullSecrets gets its ServiceAccount's
(plugin/pkg/admission/serviceaccount), so the kubelet reads only the pod's own list.
Unlike Kubernetes, a pod whose ServiceAccount does not exist is admitted (with no secrets
copied) rather than refused: a namespace's `default` ServiceAccount exists only once the
controller manager's serviceaccount controller has made it, and pods must be creatable
against a bare API server."""
from __future__ import annotations

from typing import Any

from apiserver.strategies.generic import Strategy
from machinery import errors

_TERMINAL_PHASES = ("Succeeded", "Failed")
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


class PodStrategy(Strategy):
    graceful = True

    def __init__(self) -> None:
        super().__init__(status_subresource=True, status_keeps=("ownerReferences",))

    def admission_refs(self, obj: dict) -> list[tuple[str, str]]:
        spec = obj.get("spec") or {}
        name = spec.get("serviceAccountName")
        if not isinstance(name, str) or not name or spec.get("imagePullSecrets"):
            return []
        if MIRROR_POD_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {}):
            return []  # a static pod's mirror: the plugin leaves it alone
        return [("serviceaccounts", name)]

    def admit_create(self, obj: dict, found: dict[tuple[str, str], dict | None]) -> None:
        """The ServiceAccount's imagePullSecrets, copied (names only) into a pod that has none."""
        for ref in self.admission_refs(obj):
            sa = found.get(ref) or {}
            secrets = [{"name": s["name"]} for s in sa.get("imagePullSecrets") or []
                       if isinstance(s, dict) and isinstance(s.get("name"), str)]
            if secrets:
                obj["spec"]["imagePullSecrets"] = secrets

    def grace_period(self, obj: dict, requested: int | None) -> int:
        """The request's grace, else the pod's terminationGracePeriodSeconds; 0 for a pod
        no kubelet runs (unscheduled) or that has finished, since nobody would confirm it."""
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in _TERMINAL_PHASES:
            return 0
        return spec.get("terminationGracePeriodSeconds", 30) if requested is None else requested

    def deletion_finished(self, obj: dict) -> bool:
        return obj["metadata"].get("deletionGracePeriodSeconds", 0) == 0

    def bind(self, obj: dict, binding: Any, *, now: str) -> dict:
        """`obj` bound to the binding's node, with PodScheduled=True; a Conflict if it is
        bound already, being deleted, or not the pod the binding names."""
        name, md = obj["metadata"]["name"], obj["metadata"]
        uid = (binding.get("metadata") or {}).get("uid")
        if uid and uid != md.get("uid"):
            # A binding meant for an earlier pod of the same name.
            raise errors.conflict("pods", name, why=f"Precondition failed: UID in precondition: "
                                                    f"{uid}, UID in object meta: {md.get('uid')}")
        if md.get("deletionTimestamp"):
            raise errors.conflict("pods", name, why="pod is being deleted, cannot be assigned to a host")
        if bound := (obj.get("spec") or {}).get("nodeName"):
            raise errors.conflict("pods", name, why=f"pod {name} is already assigned to node \"{bound}\"")
        obj.setdefault("spec", {})["nodeName"] = binding["target"]["name"]
        conds = [c for c in (obj.setdefault("status", {}).get("conditions") or [])
                 if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now})
        obj["status"]["conditions"] = conds
        return obj
