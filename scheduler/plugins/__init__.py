"""In-tree plugins, one module each, and the registry that config names resolve through.

Each plugin module has a `NAME` and a constructor `new(args: dict, handle) -> plugin`;
`args` is the profile's pluginConfig entry for that plugin ({} if none) and `handle`
carries what the running scheduler offers plugins (`bind`, the function
DefaultBinder posts bindings with; `pvcs`, `pvs`, `storageclasses`, informers, and
`annotate_claim`, for VolumeBinding). REGISTRY names them as the controller manager's
table names its controllers (machinery.registry).
"""
from __future__ import annotations

from typing import Any, Callable

from machinery.registry import Registry
from scheduler.framework import Plugin
from scheduler.plugins import (balanced_allocation, default_binder, image_locality, node_affinity,
                               node_name, node_ports, node_ready, node_resources_fit,
                               node_unschedulable, pod_topology_spread, taint_toleration, volume_binding)

Factory = Callable[[dict, Any], Plugin]

REGISTRY: Registry[Factory] = Registry("plugin", [
    (m.NAME, m.new) for m in (node_unschedulable, node_name, node_ready, taint_toleration,
                              node_affinity, node_ports, node_resources_fit, volume_binding, pod_topology_spread,
                              balanced_allocation, image_locality, default_binder)
])

# kube-scheduler's default multiPoint plugins (config/v1/default_plugins.go) that minik8s
# implements, in order, with their default score weights; NodeReady is minik8s' own.
DEFAULT_PLUGINS: list[tuple[str, int | None]] = [
    ("NodeUnschedulable", None),
    ("NodeName", None),
    ("NodeReady", None),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", None),
    ("NodeResourcesFit", 1),
    ("VolumeBinding", None),
    ("PodTopologySpread", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", None),
]

# Real kube-scheduler plugins minik8s does not have: a config may disable them (they are
# off anyway) but not enable them.
KNOWN_ELSEWHERE = {"PrioritySort", "SchedulingGates", "VolumeRestrictions", "NodeVolumeLimits",
                   "VolumeZone", "InterPodAffinity", "DefaultPreemption",
                   "DynamicResources", "EBSLimits", "GCEPDLimits", "AzureDiskLimits",
                   "CinderLimits"}
