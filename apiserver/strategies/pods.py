"""Pods: graceful deletion (a bound, running pod is kept, marked, until its kubelet has
stopped it and deletes it with grace 0), binding to a node (the scheduler's only write),
as Kubernetes' pod strategy and BindingREST do; and the ServiceAccount admission plugin
(plugin/pkg/admission/serviceaccount) for a pod being created:
- its ServiceAccount (`spec.serviceAccountName`, defaulted to `default`) is read;
- unless `automountServiceAccountToken` is false (the pod's setting wins over the
  ServiceAccount's), the projected volume `kube-api-access-<5 random>` (a 3607 s
  serviceAccountToken at `token`, `ca.crt` of the kube-root-ca.crt ConfigMap, the
  namespace from the downward API; defaultMode 0644) is added and mounted read-only at
  /var/run/secrets/kubernetes.io/serviceaccount in every init and app container that
  mounts nothing there, exactly as upstream shapes it; a volume already named
  `kube-api-access-*` is reused;
- a pod created without imagePullSecrets gets its ServiceAccount's, so the kubelet
  reads only the pod's own list.
A static pod's mirror is left alone.
A pod whose ServiceAccount does not exist is refused, as upstream refuses it: a 403
`pods "<name>" is forbidden: error looking up service account <ns>/<sa>: serviceaccount
"<sa>" not found`, nothing stored. `default` is read up to 10 times, 100-200 ms apart,
before it counts as missing (upstream's getServiceAccount), since the serviceaccount
controller makes it in every new namespace moments after the namespace; against an API
server with no controller manager, whoever makes a namespace makes its `default` too
(the test harness does)."""
from __future__ import annotations

import random
from typing import Any

from apiserver.strategies.generic import Strategy
from machinery import errors

_TERMINAL_PHASES = ("Succeeded", "Failed")
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
TOKEN_VOLUME_PREFIX = "kube-api-access-"  # ServiceAccountVolumeName + "-"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # DefaultAPITokenMountPath
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DEFAULT_SERVICE_ACCOUNT = "default"
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # utilrand's, as generateName uses


def token_volume_source() -> dict:
    """The projected source of a pod's ServiceAccount volume (TokenVolumeSource)."""
    return {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}


def _automount(sa: dict, spec: dict) -> bool:
    """shouldAutomount: the pod's automountServiceAccountToken, else the ServiceAccount's, else true."""
    for setting in (spec.get("automountServiceAccountToken"), sa.get("automountServiceAccountToken")):
        if isinstance(setting, bool):
            return setting
    return True


def mount_service_account_token(spec: dict) -> None:
    """Add the token volume and its mounts to a pod spec (mountServiceAccountToken)."""
    volumes = spec.get("volumes") or []
    name = next((v.get("name") for v in volumes if isinstance(v, dict)
                 and str(v.get("name", "")).startswith(TOKEN_VOLUME_PREFIX)), None)
    has_volume = name is not None
    name = name or TOKEN_VOLUME_PREFIX + "".join(random.choices(_NAME_ALPHABET, k=5))
    needed = False
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            mounts = c.get("volumeMounts") or []
            if any(isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                continue  # the container's own mount there wins
            c["volumeMounts"] = [*mounts, {"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}]
            needed = True
    if needed and not has_volume:
        spec["volumes"] = [*volumes, {"name": name, "projected": token_volume_source()}]


class PodStrategy(Strategy):
    graceful = True
    admission_plugin = "ServiceAccount"

    def __init__(self) -> None:
        super().__init__(status_subresource=True, status_keeps=("ownerReferences",))

    def admission_refs(self, obj: dict) -> list[tuple[str, str]]:
        spec = obj.get("spec") or {}
        name = spec.get("serviceAccountName")
        if not isinstance(name, str) or not name:
            return []
        if MIRROR_POD_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {}):
            return []  # a static pod's mirror: the plugin leaves it alone
        return [("serviceaccounts", name)]

    def admission_attempts(self, ref: tuple[str, str]) -> int:
        return 10 if ref == ("serviceaccounts", DEFAULT_SERVICE_ACCOUNT) else 1

    def admit_create(self, obj: dict, found: dict[tuple[str, str], dict | None], *, name: str) -> None:
        """The ServiceAccount admission plugin (see the module docstring)."""
        for ref in self.admission_refs(obj):
            sa = found.get(ref)
            if sa is None:
                namespace = (obj.get("metadata") or {}).get("namespace") or ""
                raise errors.Forbidden(
                    f'pods "{name}" is forbidden: error looking up service account {namespace}/{ref[1]}: '
                    f'serviceaccount "{ref[1]}" not found', kind="pods", name=name)
            spec = obj["spec"]
            if _automount(sa, spec):
                mount_service_account_token(spec)
            if not spec.get("imagePullSecrets"):
                secrets = [{"name": s["name"]} for s in sa.get("imagePullSecrets") or []
                           if isinstance(s, dict) and isinstance(s.get("name"), str)]
                if secrets:
                    spec["imagePullSecrets"] = secrets

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
