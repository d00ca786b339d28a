"""The clusterrole-aggregation controller (Kubernetes' pkg/controller/clusterroleaggregation).

What it guarantees
- A ClusterRole with an `aggregationRule` has as its `rules` the rules of every other
  ClusterRole that one of its `clusterRoleSelectors` matches: selectors in order, the
  roles each matches by name, each rule once (the first time it appears), so the result
  does not depend on the order events arrive in. It never takes rules from itself.
- It is kept so: any ClusterRole's creation, change or deletion re-aggregates every
  aggregated ClusterRole, since a change of labels may make a role start or stop
  matching. A role already holding the aggregate is not written.
- A ClusterRole without an aggregationRule is never written. A 409 (the role changed
  under the write) is retried from the current cache, as every controller's is.

Keys are ClusterRole names. Writes are updates carrying the cached resourceVersion, made
with this controller's credentials (`system:controller:clusterrole-aggregation-controller`
may `escalate` ClusterRoles, so RBAC's escalation check lets it write any rules).

Concurrency: one asyncio loop; a role is never reconciled by two workers at once.
"""
from __future__ import annotations

import copy
import logging

from controller_manager.controller import Controller
from machinery import labels

log = logging.getLogger("minik8s.controller.clusterroleaggregation")


class ClusterRoleAggregationController(Controller):
    name = "clusterrole-aggregation"

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.roles = self.watch(factory.informer("clusterroles"), key_fn=self._aggregated)

    def _aggregated(self, _changed: dict) -> list[str]:
        """Every aggregated role: any change may alter what one of them gathers."""
        return [r["metadata"]["name"] for r in self.roles.store.list()
                if r.get("aggregationRule") is not None]

    def aggregate(self, role: dict) -> list[dict]:
        """The rules `role`'s selectors gather, in Kubernetes' order."""
        gathered: list[dict] = []
        everyone = sorted(self.roles.store.list(), key=lambda r: r["metadata"]["name"])
        for sel in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
            selector = labels.from_label_selector(sel)
            for other in everyone:
                if other["metadata"]["name"] == role["metadata"]["name"]:
                    continue
                if not selector.matches(other["metadata"].get("labels") or {}):
                    continue
                for rule in other.get("rules") or []:
                    if rule not in gathered:
                        gathered.append(rule)
        return gathered

    async def reconcile(self, key) -> None:
        role = self.roles.store.get(key)
        if role is None or role.get("aggregationRule") is None:
            return
        rules = self.aggregate(role)
        if rules == (role.get("rules") or []):
            return
        updated = copy.deepcopy(role)
        updated["rules"] = rules
        log.info("%s: ClusterRole %s now aggregates %d rules", self.name, key, len(rules))
        await self.client.update(updated)
