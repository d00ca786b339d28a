"""Per-kind behaviour of the generic registry, as Kubernetes' REST strategies
(RESTCreateStrategy, RESTUpdateStrategy, RESTDeleteStrategy and the status strategies of
k8s.io/apiserver's generic registry).

`apiserver/resources.py` does what every kind shares (identity checks, defaulting,
validation, compare-and-swap writes, finalizers, deletion propagation) and asks the
kind's strategy, attached to its row in `apiserver/registry.py`, for what differs:
what a create resets, what an update or a status update carries over, how long a delete
waits, when a marked object is finally removed, and the transforms of kind-specific
subresources (a pod's binding).

Why a package and not one module: a kind the next issues add (Job, StatefulSet,
PersistentVolumeClaim, CertificateSigningRequest, ...) gets its behaviour by adding a
module here and naming its strategy in the registry, the way Kubernetes keeps one
`pkg/registry/<group>/<kind>/strategy.go` per kind; neither resources.py nor an
existing strategy grows a branch for it. Plain kinds use `Strategy` as it is, configured
by keyword (generation tracking, status subresource).

Contract for every strategy method: it works on private copies the caller owns (it may
mutate them), does no I/O, and raises `machinery.errors.APIError` for the client's
mistakes only.
"""
from apiserver.strategies.certificates import CSRStrategy
from apiserver.strategies.generic import Strategy
from apiserver.strategies.namespaces import NamespaceStrategy
from apiserver.strategies.nodes import NodeStrategy
from apiserver.strategies.pods import PodStrategy
from apiserver.strategies.services import ServiceStrategy

__all__ = ["CSRStrategy", "NamespaceStrategy", "NodeStrategy", "PodStrategy", "ServiceStrategy", "Strategy"]
