"""Namespaces: created Active; a delete marks the namespace Terminating and keeps it
until the namespace controller has emptied it and cleared `spec.finalizers` through
`/finalize` (Kubernetes' namespace REST storage)."""
from __future__ import annotations

from apiserver.strategies.generic import Strategy
from apiserver.timestamps import now


class NamespaceStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"phase": "Active"}

    def before_delete(self, obj: dict) -> bool:
        if not (obj.get("spec") or {}).get("finalizers"):
            return False
        obj.setdefault("status", {})["phase"] = "Terminating"
        md = obj["metadata"]
        md.setdefault("deletionTimestamp", now())
        md.setdefault("deletionGracePeriodSeconds", 0)
        return True

    def deletion_finished(self, obj: dict) -> bool:
        return not (obj.get("spec") or {}).get("finalizers")
