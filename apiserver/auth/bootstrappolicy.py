"""Kubernetes' bootstrap RBAC policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy), and
its reconciliation into storage when the API server starts (the `rbac/bootstrap-roles`
post-start hook).

What it guarantees
- `cluster_roles()` and `cluster_role_bindings()` are the default roles and bindings with
  Kubernetes 1.32's rules, labels (`kubernetes.io/bootstrapping: rbac-defaults`) and
  `rbac.authorization.kubernetes.io/autoupdate: "true"`: cluster-admin; admin, edit and
  view, aggregated (their rules come from the `system:aggregate-to-*` roles through the
  clusterrole-aggregation controller, as in Kubernetes); system:basic-user,
  system:discovery, system:public-info-viewer, system:monitoring,
  system:service-account-issuer-discovery, system:auth-delegator; the components'
  system:kube-scheduler, system:kube-controller-manager, system:node (bound to nobody:
  the Node authorizer grants nodes their rights), system:node-proxier and
  system:node-bootstrapper; the CSR roles, bound to nobody (kubeadm binds the first two):
  system:certificates.k8s.io:certificatesigningrequests:nodeclient and :selfnodeclient,
  and system:certificates.k8s.io:<signer>-approver for the four kubernetes.io signers;
  and the per-controller roles `system:controller:<name>` of the controllers minik8s runs.
- `namespace_roles()` and `namespace_role_bindings()`: kube-system's
  extension-apiserver-authentication-reader Role (the aggregation layer's ConfigMap),
  bound to the scheduler and the controller manager as Kubernetes binds it.
- Per-controller roles are bound, as in Kubernetes, to the controller's ServiceAccount
  in kube-system, and also to the user `system:kube-controller-manager`: minik8s runs
  every controller with the controller manager's one credential (kube-controller-
  manager's `--use-service-account-credentials=false`, for which Kubernetes documents
  that the manager's user must hold the controllers' roles).
- `reconcile(resources)` does what kube-apiserver's post-start hook does with
  `Confirm` and without removing extra permissions: it creates each default object that
  is missing; to an existing one whose `rbac.authorization.kubernetes.io/autoupdate`
  annotation is not "false" it adds what the default has and it lacks (rules it does not
  cover, aggregation selectors, binding subjects, labels and annotations), and a binding
  whose roleRef differs is deleted and created again (roleRef is immutable). What a user
  added is never taken away; a role annotated `autoupdate: "false"` is left alone. It is
  idempotent and safe to run from several API servers at once: AlreadyExists, Conflict
  and NotFound from a racing writer are success (the winner wrote the same thing).

Pure data plus one coroutine that writes through `apiserver.resources.Resources`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from apiserver.auth.authorizer import (ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, KUBE_CONTROLLER_MANAGER,
                                       KUBE_PROXY, KUBE_SCHEDULER, MONITORING_GROUP,
                                       SERVICE_ACCOUNTS_GROUP, SYSTEM_PRIVILEGED_GROUP)
from apiserver.auth.rbac import covers
from machinery import errors

log = logging.getLogger("minik8s.apiserver.bootstrappolicy")

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}

READ = ["get", "list", "watch"]
READ_WRITE = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
EVENTS = ("create", "patch", "update")
CERTIFICATES = "certificates.k8s.io"
# The signers Kubernetes defines (k8s.io/api/certificates/v1).
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"


def rule(verbs: Any, groups: Any = None, resources: Any = None, *, names: Any = None,
         urls: Any = None) -> dict:
    """A PolicyRule; a single string stands for a one-element list."""
    def many(v: Any) -> list[str]:
        return [v] if isinstance(v, str) else list(v)
    out: dict[str, list[str]] = {"verbs": many(verbs)}
    if groups is not None:
        out["apiGroups"] = many(groups)
    if resources is not None:
        out["resources"] = many(resources)
    if names is not None:
        out["resourceNames"] = many(names)
    if urls is not None:
        out["nonResourceURLs"] = many(urls)
    return out


def events_rule() -> dict:
    return rule(EVENTS, ["", "events.k8s.io"], "events")


def _cluster_role(name: str, rules: list[dict], *, labels: dict | None = None,
                  aggregate: str | None = None) -> dict:
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "ClusterRole",
                           "metadata": {"name": name, "labels": {**LABELS, **(labels or {})},
                                        "annotations": dict(AUTOUPDATE)}}
    if aggregate:
        obj["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{aggregate}": "true"}}]}
    else:
        obj["rules"] = rules
    return obj


def _to(label: str) -> dict:
    return {f"rbac.authorization.k8s.io/aggregate-to-{label}": "true"}


def _user(name: str) -> dict:
    return {"kind": "User", "apiGroup": GROUP, "name": name}


def _group(name: str) -> dict:
    return {"kind": "Group", "apiGroup": GROUP, "name": name}


def _service_account(namespace: str, name: str) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def _binding(name: str, *subjects: dict, role: str | None = None) -> dict:
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding",
                           "metadata": {"name": name, "labels": dict(LABELS),
                                        "annotations": dict(AUTOUPDATE)},
                           "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole",
                                       "name": role or name}}
    if subjects:
        obj["subjects"] = list(subjects)
    return obj


# --- the roles ----------------------------------------------------------------------------

def _aggregate_to_view() -> list[dict]:
    return [
        rule(READ, "", ["configmaps", "endpoints", "persistentvolumeclaims",
                        "persistentvolumeclaims/status", "pods", "replicationcontrollers",
                        "replicationcontrollers/scale", "serviceaccounts", "services",
                        "services/status"]),
        rule(READ, "", ["bindings", "events", "limitranges", "namespaces/status", "pods/log",
                        "pods/status", "replicationcontrollers/status", "resourcequotas",
                        "resourcequotas/status"]),
        rule(READ, "", "namespaces"),
        rule(READ, "discovery.k8s.io", "endpointslices"),
        rule(READ, "apps", ["controllerrevisions", "daemonsets", "daemonsets/status",
                            "deployments", "deployments/scale", "deployments/status",
                            "replicasets", "replicasets/scale", "replicasets/status",
                            "statefulsets", "statefulsets/scale", "statefulsets/status"]),
        rule(READ, "autoscaling", ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, "batch", ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        rule(READ, "extensions", ["daemonsets", "daemonsets/status", "deployments",
                                  "deployments/scale", "deployments/status", "ingresses",
                                  "ingresses/status", "networkpolicies", "replicasets",
                                  "replicasets/scale", "replicasets/status",
                                  "replicationcontrollers/scale"]),
        rule(READ, "policy", ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, "networking.k8s.io", ["ingresses", "ingresses/status", "networkpolicies"]),
    ]


def _aggregate_to_edit() -> list[dict]:
    return [
        rule(READ, "", ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
                        "services/proxy"]),
        rule("impersonate", "", "serviceaccounts"),
        rule(WRITE, "", ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
        rule("create", "", "pods/eviction"),
        rule(WRITE, "", ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                         "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                         "services/proxy"]),
        rule("create", "", "serviceaccounts/token"),
        rule(WRITE, "apps", ["daemonsets", "deployments", "deployments/rollback",
                             "deployments/scale", "replicasets", "replicasets/scale",
                             "statefulsets", "statefulsets/scale"]),
        rule(WRITE, "autoscaling", "horizontalpodautoscalers"),
        rule(WRITE, "batch", ["cronjobs", "jobs"]),
        rule(WRITE, "extensions", ["daemonsets", "deployments", "deployments/rollback",
                                   "deployments/scale", "ingresses", "networkpolicies",
                                   "replicasets", "replicasets/scale",
                                   "replicationcontrollers/scale"]),
        rule(WRITE, "policy", "poddisruptionbudgets"),
        rule(WRITE, "networking.k8s.io", ["ingresses", "networkpolicies"]),
        rule(READ_WRITE, "coordination.k8s.io", "leases"),
    ]


def _aggregate_to_admin() -> list[dict]:
    return [rule("create", "authorization.k8s.io", "localsubjectaccessreviews"),
            rule(READ_WRITE, GROUP, ["rolebindings", "roles"])]


def _kube_scheduler() -> list[dict]:
    return [
        events_rule(),
        rule("create", "coordination.k8s.io", "leases"),
        rule(["get", "update"], "coordination.k8s.io", "leases", names="kube-scheduler"),
        rule(READ, "", "nodes"),
        rule(["delete", "get", "list", "watch"], "", "pods"),
        rule("create", "", ["bindings", "pods/binding"]),
        rule(["patch", "update"], "", "pods/status"),
        rule(READ, "", ["replicationcontrollers", "services"]),
        rule(READ, ["apps", "extensions"], "replicasets"),
        rule(READ, "apps", "statefulsets"),
        rule(READ, "policy", "poddisruptionbudgets"),
        rule(READ, "", ["persistentvolumeclaims", "persistentvolumes"]),
        rule(["patch", "update"], "", ["persistentvolumeclaims", "persistentvolumes"]),
        rule(READ, "storage.k8s.io", "storageclasses"),
        rule("create", "authentication.k8s.io", "tokenreviews"),
        rule("create", "authorization.k8s.io", "subjectaccessreviews"),
        rule(READ, "storage.k8s.io", "csinodes"),
        rule(READ, "", "namespaces"),
        rule(READ, "storage.k8s.io", "csidrivers"),
        rule(READ, "storage.k8s.io", "csistoragecapacities"),
    ]


def _kube_controller_manager() -> list[dict]:
    return [
        events_rule(),
        rule("create", "coordination.k8s.io", "leases"),
        rule(["get", "update"], "coordination.k8s.io", "leases", names="kube-controller-manager"),
        rule("create", "", ["secrets", "serviceaccounts"]),
        rule("delete", "", "secrets"),
        rule("get", "", ["configmaps", "namespaces", "secrets", "serviceaccounts"]),
        rule("update", "", ["secrets", "serviceaccounts"]),
        rule("create", "authentication.k8s.io", "tokenreviews"),
        rule("create", "authorization.k8s.io", "subjectaccessreviews"),
        rule(["list", "watch"], "*", "*"),
        rule("create", "", "serviceaccounts/token"),
    ]


def _node() -> list[dict]:
    return [
        rule("create", "authentication.k8s.io", "tokenreviews"),
        rule("create", "authorization.k8s.io", ["localsubjectaccessreviews", "subjectaccessreviews"]),
        rule(READ, "", "services"),
        rule(["create", "get", "list", "watch"], "", "nodes"),
        rule(["patch", "update"], "", "nodes/status"),
        rule(["patch", "update"], "", "nodes"),
        rule(EVENTS, "", "events"),
        rule(READ, "", "pods"),
        rule(["create", "delete"], "", "pods"),
        rule(["patch", "update"], "", "pods/status"),
        rule("create", "", "pods/eviction"),
        rule(READ, "", ["configmaps", "secrets"]),
        rule("get", "", ["persistentvolumeclaims", "persistentvolumes"]),
        rule("get", "", "endpoints"),
        rule(["create", "get", "list", "watch"], CERTIFICATES, "certificatesigningrequests"),
        rule(["create", "delete", "get", "patch", "update"], "coordination.k8s.io", "leases"),
        rule("get", "storage.k8s.io", "volumeattachments"),
        rule("create", "", "serviceaccounts/token"),
        rule(["get", "patch", "update"], "", "persistentvolumeclaims/status"),
        rule(READ, "storage.k8s.io", "csidrivers"),
        rule(["create", "delete", "get", "patch", "update"], "storage.k8s.io", "csinodes"),
        rule(READ, "node.k8s.io", "runtimeclasses"),
    ]


# The controllers minik8s runs, by Kubernetes' controller name, with their roles
# (bootstrappolicy's controller_policy.go). nodelifecycle and nodeipam are both Kubernetes'
# node-controller.
def _controller_roles() -> dict[str, list[dict]]:
    return {
        # csrapproving, csrsigning and csrcleaner, as kube-controller-manager runs them.
        "certificate-controller": [
            rule(["delete", "get", "list", "watch"], CERTIFICATES, "certificatesigningrequests"),
            rule("update", CERTIFICATES, ["certificatesigningrequests/approval",
                                          "certificatesigningrequests/status"]),
            rule("approve", CERTIFICATES, "signers", names=KUBELET_CLIENT_SIGNER),
            rule("sign", CERTIFICATES, "signers", names=[LEGACY_UNKNOWN_SIGNER, CLIENT_SIGNER,
                                                         KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER]),
            rule("create", "authorization.k8s.io", "subjectaccessreviews"),
            events_rule()],
        "clusterrole-aggregation-controller": [
            rule(["escalate", "get", "list", "patch", "update", "watch"], GROUP, "clusterroles")],
        "cronjob-controller": [
            rule(["get", "list", "update", "watch"], "batch", "cronjobs"),
            rule(["create", "delete", "get", "list", "patch", "update", "watch"], "batch", "jobs"),
            rule("update", "batch", "cronjobs/status"),
            rule("update", "batch", "cronjobs/finalizers"),
            rule(["delete", "list"], "", "pods"),
            events_rule()],
        "daemon-set-controller": [
            rule(["get", "list", "watch"], ["extensions", "apps"], "daemonsets"),
            rule("update", ["extensions", "apps"], "daemonsets/status"),
            rule("update", ["extensions", "apps"], "daemonsets/finalizers"),
            rule(["list", "watch"], "", "nodes"),
            rule(["list", "watch", "create", "delete", "patch"], "", "pods"),
            rule("create", "", "pods/binding"),
            rule(["get", "list", "watch", "create", "delete", "update", "patch"], "apps",
                 "controllerrevisions"),
            events_rule()],
        "deployment-controller": [
            rule(["get", "list", "update", "watch"], ["apps", "extensions"], "deployments"),
            rule("update", ["apps", "extensions"], "deployments/status"),
            rule("update", ["apps", "extensions"], "deployments/finalizers"),
            rule(["create", "delete", "get", "list", "patch", "update", "watch"],
                 ["apps", "extensions"], "replicasets"),
            rule(["get", "list", "update", "watch"], "", "pods"),
            events_rule()],
        "disruption-controller": [
            rule(READ, ["apps", "extensions"], ["deployments", "replicasets", "statefulsets"]),
            rule(READ, "", ["pods", "replicationcontrollers"]),
            rule(READ, "policy", "poddisruptionbudgets"),
            rule("get", "*", "*/scale"),
            rule("update", "policy", "poddisruptionbudgets/status"),
            events_rule()],
        "endpoint-controller": [
            rule(READ, "", ["pods", "services"]),
            rule(["create", "delete", "get", "list", "update", "watch"], "", "endpoints"),
            rule("create", "", "endpoints/restricted"),
            events_rule()],
        "endpointslice-controller": [
            rule(READ, "", ["nodes", "pods", "services"]),
            # Its slices' ownerReferences block the Service's deletion.
            rule("update", "", "services/finalizers"),
            rule(["create", "delete", "get", "list", "update"], "discovery.k8s.io", "endpointslices"),
            events_rule()],
        "generic-garbage-collector": [
            rule(["delete", "get", "list", "patch", "update", "watch"], "*", "*"),
            events_rule()],
        "job-controller": [
            rule(["get", "list", "patch", "update", "watch"], "batch", "jobs"),
            rule(["patch", "update"], "batch", "jobs/status"),
            rule("update", "batch", "jobs/finalizers"),
            rule(["create", "delete", "list", "patch", "watch"], "", "pods"),
            events_rule()],
        "namespace-controller": [
            rule(["delete", "get", "list", "watch"], "", "namespaces"),
            rule("update", "", ["namespaces/finalize", "namespaces/status"]),
            rule(["delete", "deletecollection", "get", "list", "watch"], "*", "*")],
        "node-controller": [
            rule(["delete", "get", "list", "patch", "update", "watch"], "", "nodes"),
            rule(["patch", "update"], "", "nodes/status"),
            rule(["patch", "update"], "", "pods/status"),
            rule(["delete", "get", "list", "watch"], "", "pods"),
            events_rule()],
        "persistent-volume-binder": [
            rule(["create", "delete", "get", "list", "update", "watch"], "", "persistentvolumes"),
            rule("update", "", "persistentvolumes/status"),
            rule(["get", "list", "update", "watch"], "", "persistentvolumeclaims"),
            rule("update", "", "persistentvolumeclaims/status"),
            rule(["create", "delete", "get", "list", "watch"], "", "pods"),
            rule(READ, "storage.k8s.io", "storageclasses"),
            rule(READ, "", "nodes"),
            events_rule()],
        "pv-protection-controller": [
            rule(["get", "list", "update", "watch"], "", "persistentvolumes"),
            events_rule()],
        "pvc-protection-controller": [
            rule(["get", "list", "update", "watch"], "", "persistentvolumeclaims"),
            rule(["get", "list", "watch"], "", "pods"),
            events_rule()],
        # minik8s's local-path provisioner (rancher's local-path-provisioner's rules, as
        # k3s binds them): it makes and deletes the hostPath volumes and their helper pods.
        "local-path-provisioner": [
            rule(["create", "delete", "get", "list", "patch", "update", "watch"], "", "persistentvolumes"),
            rule(["get", "list", "update", "watch"], "", "persistentvolumeclaims"),
            rule(["create", "delete", "get", "list", "watch"], "", "pods"),
            rule(READ, "", "nodes"),
            rule(READ, "storage.k8s.io", "storageclasses"),
            events_rule()],
        "pod-garbage-collector": [
            rule(["delete", "list", "watch"], "", "pods"),
            rule(READ, "", "nodes"),
            rule("patch", "", "pods/status")],
        "replicaset-controller": [
            rule(["get", "list", "update", "watch"], ["apps", "extensions"], "replicasets"),
            rule("update", ["apps", "extensions"], "replicasets/status"),
            rule("update", ["apps", "extensions"], "replicasets/finalizers"),
            rule(["create", "delete", "list", "patch", "watch"], "", "pods"),
            events_rule()],
        "replication-controller": [
            rule(["get", "list", "watch", "update"], "", "replicationcontrollers"),
            rule("update", "", "replicationcontrollers/status"),
            rule("update", "", "replicationcontrollers/finalizers"),
            rule(["list", "watch", "patch", "create", "delete"], "", "pods"),
            events_rule()],
        "root-ca-cert-publisher": [
            rule(["create", "update"], "", "configmaps"),
            events_rule()],
        "service-account-controller": [
            rule("create", "", "serviceaccounts"),
            events_rule()],
        # The servicelb controller: Kubernetes' service-controller's rules, and the
        # EndpointSlices it reads for externalTrafficPolicy Local, as k3s's does.
        "service-controller": [
            rule(READ, "", "services"),
            rule(["patch", "update"], "", "services/status"),
            rule(["list", "watch"], "", "nodes"),
            rule(["list", "watch"], "discovery.k8s.io", "endpointslices"),
            events_rule()],
        "statefulset-controller": [
            rule(["list", "watch"], "", "pods"),
            rule(["get", "list", "watch"], "apps", "statefulsets"),
            rule("update", "apps", "statefulsets/status"),
            rule("update", "apps", "statefulsets/finalizers"),
            rule(["create", "delete", "get", "patch", "update"], "", "pods"),
            rule(["create", "delete", "get", "list", "patch", "update", "watch"], "apps",
                 "controllerrevisions"),
            rule(["create", "get"], "", "persistentvolumeclaims"),
            rule(["delete", "update"], "", "persistentvolumeclaims"),
            events_rule()],
        # h-hpa (issue 18): the HPA reads scale of any kind and the resource metrics API.
        "horizontal-pod-autoscaler": [
            rule(["get", "list", "watch"], "autoscaling", "horizontalpodautoscalers"),
            rule("update", "autoscaling", "horizontalpodautoscalers/status"),
            rule(["get", "update"], "*", "*/scale"),
            rule("list", "", "pods"),
            rule("list", "metrics.k8s.io", "pods"),
            rule(["get", "list"], "custom.metrics.k8s.io", "*"),
            rule(["get", "list"], "external.metrics.k8s.io", "*"),
            events_rule()],
        "ttl-after-finished-controller": [
            rule(["delete", "get", "list", "watch"], "batch", "jobs"),
            events_rule()],
    }


def cluster_roles() -> list[dict]:
    roles = [
        _cluster_role("cluster-admin", [rule("*", "*", "*"), rule("*", urls="*")]),
        _cluster_role("admin", [], aggregate="admin"),
        _cluster_role("edit", [], labels=_to("admin"), aggregate="edit"),
        _cluster_role("view", [], labels=_to("edit"), aggregate="view"),
        _cluster_role("system:aggregate-to-admin", _aggregate_to_admin(), labels=_to("admin")),
        _cluster_role("system:aggregate-to-edit", _aggregate_to_edit(), labels=_to("edit")),
        _cluster_role("system:aggregate-to-view", _aggregate_to_view(), labels=_to("view")),
        _cluster_role("system:auth-delegator", [
            rule("create", "authentication.k8s.io", "tokenreviews"),
            rule("create", "authorization.k8s.io", "subjectaccessreviews")]),
        _cluster_role("system:basic-user", [
            rule("create", "authorization.k8s.io", ["selfsubjectaccessreviews",
                                                    "selfsubjectrulesreviews"]),
            rule("create", "authentication.k8s.io", "selfsubjectreviews")]),
        _cluster_role("system:discovery", [rule("get", urls=[
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
            "/readyz", "/version", "/version/"])]),
        _cluster_role("system:public-info-viewer", [rule("get", urls=[
            "/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        _cluster_role("system:monitoring", [rule("get", urls=[
            "/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis",
            "/readyz", "/readyz/*"])]),
        _cluster_role("system:service-account-issuer-discovery", [rule("get", urls=[
            "/.well-known/openid-configuration", "/openid/v1/jwks"])]),
        _cluster_role("system:kube-scheduler", _kube_scheduler()),
        _cluster_role("system:kube-controller-manager", _kube_controller_manager()),
        _cluster_role("system:node", _node()),
        _cluster_role("system:node-proxier", [
            rule(["list", "watch"], "", ["endpoints", "services"]),
            rule(READ, "", "nodes"),
            events_rule(),
            rule(["list", "watch"], "discovery.k8s.io", "endpointslices")]),
        _cluster_role("system:node-bootstrapper", [
            rule(["create", "get", "list", "watch"], CERTIFICATES, "certificatesigningrequests")]),
        # What the csrapproving controller asks a SubjectAccessReview about: kubeadm binds
        # nodeclient to its bootstrappers and selfnodeclient to system:nodes.
        _cluster_role("system:certificates.k8s.io:certificatesigningrequests:nodeclient", [
            rule("create", CERTIFICATES, "certificatesigningrequests/nodeclient")]),
        _cluster_role("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", [
            rule("create", CERTIFICATES, "certificatesigningrequests/selfnodeclient")]),
        *(_cluster_role(f"system:certificates.k8s.io:{role}", [
            rule("approve", CERTIFICATES, "signers", names=signer)])
          for role, signer in (("legacy-unknown-approver", LEGACY_UNKNOWN_SIGNER),
                               ("kubelet-serving-approver", KUBELET_SERVING_SIGNER),
                               ("kube-apiserver-client-approver", CLIENT_SIGNER),
                               ("kube-apiserver-client-kubelet-approver", KUBELET_CLIENT_SIGNER))),
    ]
    roles += [_cluster_role(f"system:controller:{name}", rules)
              for name, rules in _controller_roles().items()]
    return roles


def cluster_role_bindings() -> list[dict]:
    bindings = [
        _binding("cluster-admin", _group(SYSTEM_PRIVILEGED_GROUP)),
        _binding("system:basic-user", _group(ALL_AUTHENTICATED)),
        _binding("system:discovery", _group(ALL_AUTHENTICATED)),
        _binding("system:public-info-viewer", _group(ALL_AUTHENTICATED),
                 _group(ALL_UNAUTHENTICATED)),
        _binding("system:monitoring", _group(MONITORING_GROUP)),
        _binding("system:service-account-issuer-discovery", _group(SERVICE_ACCOUNTS_GROUP)),
        _binding("system:kube-controller-manager", _user(KUBE_CONTROLLER_MANAGER)),
        _binding("system:kube-scheduler", _user(KUBE_SCHEDULER)),
        _binding("system:node"),  # the Node authorizer grants nodes their rights
        _binding("system:node-proxier", _user(KUBE_PROXY)),
    ]
    bindings += [_binding(f"system:controller:{name}", _service_account("kube-system", name),
                          _user(KUBE_CONTROLLER_MANAGER))
                 for name in _controller_roles()]
    return bindings


AUTOUPDATE_KEY = "rbac.authorization.kubernetes.io/autoupdate"


# h-agg (issue 18): Kubernetes' NamespaceRoles/NamespaceRoleBindings for kube-system that
# the aggregation layer needs: extension servers read the authentication ConfigMap.
EXTENSION_AUTH_READER = "extension-apiserver-authentication-reader"


def namespace_roles() -> list[dict]:
    return [{"apiVersion": API_VERSION, "kind": "Role",
             "metadata": {"name": EXTENSION_AUTH_READER, "namespace": "kube-system",
                          "labels": dict(LABELS), "annotations": dict(AUTOUPDATE)},
             "rules": [rule(["get", "list", "watch"], [""], ["configmaps"],
                            names=["extension-apiserver-authentication"])]}]


def namespace_role_bindings() -> list[dict]:
    return [{"apiVersion": API_VERSION, "kind": "RoleBinding",
             "metadata": {"name": f"system::{EXTENSION_AUTH_READER}", "namespace": "kube-system",
                          "labels": dict(LABELS), "annotations": dict(AUTOUPDATE)},
             "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": EXTENSION_AUTH_READER},
             "subjects": [_user("system:kube-controller-manager"), _user("system:kube-scheduler")]}]


def _merged_metadata(existing: dict, expected: dict) -> dict:
    md = dict(existing["metadata"])
    for key in ("labels", "annotations"):
        merged = {**(expected["metadata"].get(key) or {}), **(md.get(key) or {})}
        if merged:
            md[key] = merged
    return md


def reconciled(existing: dict, expected: dict) -> dict | None:
    """`existing` (a default role or binding as stored) with what `expected` adds, or
    None when there is nothing to add or it is protected by `autoupdate: "false"`.
    A binding whose roleRef differs comes back with `expected`'s roleRef: the caller
    must recreate it."""
    if (existing["metadata"].get("annotations") or {}).get(AUTOUPDATE_KEY) == "false":
        return None
    out = {**existing, "metadata": _merged_metadata(existing, expected)}
    if "roleRef" in expected:
        subjects = list(existing.get("subjects") or [])
        subjects += [s for s in expected.get("subjects") or [] if s not in subjects]
        if subjects:
            out["subjects"] = subjects
        out["roleRef"] = expected["roleRef"]
    else:
        if expected.get("aggregationRule") is not None:
            have = (existing.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
            want = expected["aggregationRule"]["clusterRoleSelectors"]
            out["aggregationRule"] = {"clusterRoleSelectors": have + [s for s in want if s not in have]}
        _, missing = covers(existing.get("rules") or [], expected.get("rules") or [])
        if missing:
            out["rules"] = list(existing.get("rules") or []) + missing
    return None if out == existing else out


async def reconcile(resources: Any) -> int:
    """Create every default (Cluster)Role and (Cluster)RoleBinding that storage lacks and add
    to existing ones what they lack (see the module docstring); returns how many objects
    were written. `resources` is the server's apiserver.resources.Resources."""
    from apiserver.registry import by_plural  # the registry imports the strategies
    written = 0

    async def ensure(plural: str, expected: dict) -> None:
        nonlocal written
        rt = by_plural(plural)
        name = expected["metadata"]["name"]
        ns = expected["metadata"].get("namespace", "")
        entry = resources.cache.get(rt, rt.key(ns, name))
        try:
            if entry is None:
                await resources.create(rt, ns, expected)
            else:
                update = reconciled(entry.obj, expected)
                if update is None:
                    return
                if update.get("roleRef", {}) != entry.obj.get("roleRef", {}):
                    await resources.delete(rt, ns, name, {"preconditions": {
                        "uid": entry.obj["metadata"]["uid"]}})
                    md = {k: v for k, v in update["metadata"].items()
                          if k in ("name", "labels", "annotations")}
                    await resources.create(rt, ns, {**update, "metadata": md})
                else:
                    await resources.update(rt, ns, name, update)
            written += 1
        except (errors.AlreadyExists, errors.Conflict, errors.NotFound):
            pass  # another API server reconciled it first
    # Roles before the bindings that name them, though a binding may exist first.
    await asyncio.gather(*(ensure("clusterroles", r) for r in cluster_roles()))
    await asyncio.gather(*(ensure("clusterrolebindings", b) for b in cluster_role_bindings()))
    await asyncio.gather(*(ensure("roles", r) for r in namespace_roles()))
    await asyncio.gather(*(ensure("rolebindings", b) for b in namespace_role_bindings()))
    if written:
        log.info("rbac/bootstrap-roles: wrote %d default roles and bindings", written)
    return written
