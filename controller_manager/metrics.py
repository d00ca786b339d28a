"""The controller manager's own metrics, in machinery.metrics.REGISTRY, beside client/'s
(workqueue_*, rest_client_*, leader_election_master_status) and the process's.

kube-controller-manager (1.32) has no per-controller reconcile metrics of its own: what
a controller does shows in its work queue's metrics, and client-go names each queue
after its controller. So, per controller:
- reconciles and their latency: `workqueue_work_duration_seconds{name}` (a worker takes
  a key -> done: one reconcile); its `_count` is the number of reconciles;
- requeues: `workqueue_retries_total{name}` (with backoff after a failure or a
  conflict, and every delayed add);
- `running_managed_controllers{name,manager}`: 1 while the controller runs, 0 once it
  has stopped (component-base's controllers metric);
- `controller_reconcile_errors_total{controller}`: minik8s' own. Kubernetes counts no
  failed syncs (it logs them through utilruntime.HandleError), and
  workqueue_retries_total cannot tell a failure from a conflict or a planned recheck;
  this counts reconciles that failed, as Controller._process decides (an Invalid object
  or any unexpected error; a Conflict or NotFound is not a failure).
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge

from machinery.metrics import REGISTRY

MANAGER = "kube-controller-manager"

RUNNING_CONTROLLERS = Gauge(
    "running_managed_controllers", "Indicates where instances of a controller are currently running",
    ["name", "manager"], registry=REGISTRY)

RECONCILE_ERRORS = Counter(
    "controller_reconcile_errors_total",
    "Reconciles that failed (an invalid object, or an error other than a conflict or a "
    "missing object), by controller. minik8s' own: kube-controller-manager has no such count.",
    ["controller"], registry=REGISTRY)


def controller_started(name: str) -> None:
    RUNNING_CONTROLLERS.labels(name, MANAGER).set(1)


def controller_stopped(name: str) -> None:
    RUNNING_CONTROLLERS.labels(name, MANAGER).set(0)
