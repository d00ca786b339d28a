"""The ReplicationController controller (pkg/controller/replication): the ReplicaSet
controller's reconciler run over core/v1 ReplicationControllers, as Kubernetes' replication
manager is the ReplicaSet controller behind a conversion.

Everything `controller_manager/controllers/replicaset.py` guarantees holds here, with
what differs between the kinds: the objects are `replicationcontrollers` in the core
group, owner references name `v1` ReplicationControllers, and the selector is a plain
label map (a set of equalities), not a LabelSelector.
"""
from __future__ import annotations

from controller_manager.controller_utils import selector_of
from controller_manager.controllers.replicaset import ReplicaSetController
from machinery.labels import Selector


class ReplicationControllerController(ReplicaSetController):
    name = "replicationcontroller"
    queue_name = "replicationmanager"
    event_source = "replication-controller"
    kind = "ReplicationController"
    resource = "replicationcontrollers"
    group = ""

    def selector(self, rc: dict) -> Selector:
        labels = (rc.get("spec") or {}).get("selector") or {}
        return selector_of({"spec": {"selector": {"matchLabels": labels}}})
