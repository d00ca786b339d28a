"""The kinds minik8s serves: the facts the API server and its clients share.

One row per resource, as discovery describes it: where it lives in the API (group,
version, plural), how it is named (kind, singular, short names, categories), whether it
is namespaced, and which subresources it has. The API server (`apiserver/registry.py`)
adds what only it needs (field selectors, table columns, strategies); the client
(`client/rest.py`) starts from this table so it needs no discovery round trip. A kind
is added here once and both sides know it.

Pure data: no I/O, importable from anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    # The first seven fields keep the order of client.rest.Resource's constructor, which
    # callers (discovery in the client) use positionally.
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str = "", name: str | None = None,
             subresource: str | None = None) -> str:
        """The REST path of the collection, an object, or one of its subresources."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


NAMESPACES = Kind("", "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize"))
PODS = Kind("", "v1", "Pod", "pods", True, ("po",),
            ("status", "binding", "log", "exec", "portforward", "eviction"), ("all",))
NODES = Kind("", "v1", "Node", "nodes", False, ("no",), ("status",))
SERVICES = Kind("", "v1", "Service", "services", True, ("svc",), ("status",), ("all",))
ENDPOINTS = Kind("", "v1", "Endpoints", "endpoints", True, ("ep",))
CONFIGMAPS = Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",))
SECRETS = Kind("", "v1", "Secret", "secrets", True)
SERVICEACCOUNTS = Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), ("token",))
EVENTS = Kind("", "v1", "Event", "events", True, ("ev",))
DEPLOYMENTS = Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",),
                   ("status", "scale"), ("all",))
REPLICASETS = Kind("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",),
                   ("status", "scale"), ("all",))
LEASES = Kind("coordination.k8s.io", "v1", "Lease", "leases", True)
ENDPOINTSLICES = Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True)
ROLES = Kind("rbac.authorization.k8s.io", "v1", "Role", "roles", True)
CLUSTERROLES = Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
ROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True)
CLUSTERROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding",
                           "clusterrolebindings", False)
JOBS = Kind("batch", "v1", "Job", "jobs", True, (), ("status",), ("all",))
CRONJOBS = Kind("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("status",), ("all",))
CERTIFICATESIGNINGREQUESTS = Kind("certificates.k8s.io", "v1", "CertificateSigningRequest",
                                  "certificatesigningrequests", False, ("csr",), ("status", "approval"))
CONTROLLERREVISIONS = Kind("apps", "v1", "ControllerRevision", "controllerrevisions", True)
DAEMONSETS = Kind("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), ("all",))
REPLICATIONCONTROLLERS = Kind("", "v1", "ReplicationController", "replicationcontrollers", True,
                              ("rc",), ("status", "scale"), ("all",))
STATEFULSETS = Kind("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), ("status", "scale"),
                    ("all",))
PODDISRUPTIONBUDGETS = Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True,
                            ("pdb",), ("status",))
PERSISTENTVOLUMES = Kind("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), ("status",))
PERSISTENTVOLUMECLAIMS = Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True,
                              ("pvc",), ("status",))
STORAGECLASSES = Kind("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",))
HORIZONTALPODAUTOSCALERS = Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                                True, ("hpa",), ("status",), ("all",))
CUSTOMRESOURCEDEFINITIONS = Kind("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                                 "customresourcedefinitions", False, ("crd", "crds"), ("status",),
                                 ("api-extensions",))
APISERVICES = Kind("apiregistration.k8s.io", "v1", "APIService", "apiservices", False, (), ("status",),
                   ("api-extensions",))
# API Priority and Fairness (apiserver/flowcontrol/).
FLOWSCHEMAS = Kind("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", "flowschemas", False, (), ("status",))
PRIORITYLEVELCONFIGURATIONS = Kind("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration",
                                   "prioritylevelconfigurations", False, (), ("status",))

# The review kinds: create-only, never stored (apiserver/auth/reviews.py).
SUBJECTACCESSREVIEWS = Kind("authorization.k8s.io", "v1", "SubjectAccessReview",
                            "subjectaccessreviews", False)
LOCALSUBJECTACCESSREVIEWS = Kind("authorization.k8s.io", "v1", "LocalSubjectAccessReview",
                                 "localsubjectaccessreviews", True)
SELFSUBJECTACCESSREVIEWS = Kind("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
                                "selfsubjectaccessreviews", False)
SELFSUBJECTRULESREVIEWS = Kind("authorization.k8s.io", "v1", "SelfSubjectRulesReview",
                               "selfsubjectrulesreviews", False)
SELFSUBJECTREVIEWS = Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False)
TOKENREVIEWS = Kind("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False)
REVIEWS = (SUBJECTACCESSREVIEWS, LOCALSUBJECTACCESSREVIEWS, SELFSUBJECTACCESSREVIEWS,
           SELFSUBJECTRULESREVIEWS, SELFSUBJECTREVIEWS, TOKENREVIEWS)

KINDS: tuple[Kind, ...] = (NAMESPACES, PODS, NODES, SERVICES, ENDPOINTS, CONFIGMAPS, SECRETS,
                           SERVICEACCOUNTS, EVENTS, DEPLOYMENTS, REPLICASETS, LEASES, ENDPOINTSLICES, ROLES,
                           CLUSTERROLES, ROLEBINDINGS, CLUSTERROLEBINDINGS, *REVIEWS,
                           JOBS, CRONJOBS, CERTIFICATESIGNINGREQUESTS, CONTROLLERREVISIONS, DAEMONSETS,
                           REPLICATIONCONTROLLERS, PODDISRUPTIONBUDGETS, STATEFULSETS,
                           PERSISTENTVOLUMES, PERSISTENTVOLUMECLAIMS, STORAGECLASSES,
                           HORIZONTALPODAUTOSCALERS, CUSTOMRESOURCEDEFINITIONS, APISERVICES,
                           FLOWSCHEMAS, PRIORITYLEVELCONFIGURATIONS)
