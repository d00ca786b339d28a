"""`describe` for PersistentVolumes, PersistentVolumeClaims and StorageClasses, laid out
as kubectl 1.32's describePersistentVolume, describePersistentVolumeClaim and
describeStorageClass (the fields minik8s serves); `describe_claim_volume` is a pod's
`persistentVolumeClaim` volume in its Volumes section. Registered in describe.py's
DESCRIBERS."""
from __future__ import annotations

from typing import Any

from machinery.errors import APIError

_MODES = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP"))
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # kubectl hides it
_DEFAULT = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")


def access_modes(modes: Any) -> str:
    modes = modes if isinstance(modes, list) else []
    return ",".join(short for mode, short in _MODES if mode in modes)


def _annotations(md: dict) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted((md.get("annotations") or {}).items()) if k != _LAST_APPLIED]


def _labels(md: dict) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((md.get("labels") or {}).items())]


def _meta_lines(w: Any, md: dict) -> None:
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Finalizers", "[" + " ".join(md.get("finalizers") or []) + "]")


def _node_affinity(w: Any, affinity: dict) -> None:
    terms = ((affinity.get("required") or {}).get("nodeSelectorTerms")) or []
    w.line(0, "Node Affinity:" if terms else "Node Affinity:\t<none>")
    if not terms:
        return
    w.line(1, "Required Terms:")
    for i, term in enumerate(terms):
        exprs = [f"{e.get('key', '')} {str(e.get('operator', '')).lower()} [{', '.join(e.get('values') or [])}]"
                 for e in (term.get("matchExpressions") or []) + (term.get("matchFields") or [])]
        w.multiline(2, f"Term {i}", exprs or ["<none>"])


def describe_persistentvolume(s: Any, r: Any, pv: dict, w: Any) -> None:
    md, spec, status = pv.get("metadata") or {}, pv.get("spec") or {}, pv.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    _meta_lines(w, md)
    w.kv(0, "StorageClass", spec.get("storageClassName", ""))
    w.kv(0, "Status", "Terminating" if md.get("deletionTimestamp") else status.get("phase", ""))
    ref = spec.get("claimRef") or {}
    w.kv(0, "Claim", f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else "")
    w.kv(0, "Reclaim Policy", spec.get("persistentVolumeReclaimPolicy", ""))
    w.kv(0, "Access Modes", access_modes(spec.get("accessModes")))
    w.kv(0, "VolumeMode", spec.get("volumeMode", "<unset>"))
    w.kv(0, "Capacity", (spec.get("capacity") or {}).get("storage", ""))
    _node_affinity(w, spec.get("nodeAffinity") or {})
    w.kv(0, "Message", status.get("message", ""))
    w.line(0, "Source:")
    if spec.get("hostPath") is not None:
        w.kv(1, "Type", "HostPath (bare host directory volume)")
        w.kv(1, "Path", spec["hostPath"].get("path", ""))
        w.kv(1, "HostPathType", spec["hostPath"].get("type", ""))
    elif spec.get("local") is not None:
        w.kv(1, "Type", "LocalVolume (a persistent volume backed by local storage on a node)")
        w.kv(1, "Path", spec["local"].get("path", ""))
    else:
        w.kv(1, "Type", next((k for k in spec if k not in (
            "capacity", "accessModes", "claimRef", "persistentVolumeReclaimPolicy", "storageClassName",
            "mountOptions", "volumeMode", "nodeAffinity", "volumeAttributesClassName")), "<unknown>"))


def _users(s: Any, claim: dict) -> list[str]:
    """The pods in the claim's namespace whose volumes name it (kubectl's getPodsForPVC)."""
    md = claim.get("metadata") or {}
    try:
        pods = s.client.list("pods", namespace=md.get("namespace") or "default").get("items", [])
    except APIError:
        return []
    return sorted(p["metadata"]["name"] for p in pods
                  if any(((v or {}).get("persistentVolumeClaim") or {}).get("claimName") == md.get("name")
                         for v in (p.get("spec") or {}).get("volumes") or []))


def describe_persistentvolumeclaim(s: Any, r: Any, pvc: dict, w: Any) -> None:
    md, spec, status = pvc.get("metadata") or {}, pvc.get("spec") or {}, pvc.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.kv(0, "StorageClass", spec.get("storageClassName", ""))
    w.kv(0, "Status", "Terminating" if md.get("deletionTimestamp") else status.get("phase", ""))
    w.kv(0, "Volume", spec.get("volumeName", ""))
    _meta_lines(w, md)
    bound = bool(spec.get("volumeName"))
    w.kv(0, "Capacity", (status.get("capacity") or {}).get("storage", "") if bound else "")
    w.kv(0, "Access Modes", access_modes(status.get("accessModes")) if bound else "")
    w.kv(0, "VolumeMode", spec.get("volumeMode", "<unset>"))
    w.multiline(0, "Used By", _users(s, pvc) or ["<none>"])


def describe_storageclass(s: Any, r: Any, sc: dict, w: Any) -> None:
    md = sc.get("metadata") or {}
    ann = md.get("annotations") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "IsDefaultClass", "Yes" if any(ann.get(k) == "true" for k in _DEFAULT) else "No")
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Provisioner", sc.get("provisioner", ""))
    params = sc.get("parameters") or {}
    w.kv(0, "Parameters", ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "<none>")
    allow = sc.get("allowVolumeExpansion")
    w.kv(0, "AllowVolumeExpansion", "<unset>" if allow is None else str(allow))
    w.kv(0, "MountOptions", ", ".join(sc.get("mountOptions") or []) or "<none>")
    w.kv(0, "ReclaimPolicy", sc.get("reclaimPolicy", "Delete"))
    w.kv(0, "VolumeBindingMode", sc.get("volumeBindingMode", "Immediate"))


def describe_claim_volume(w: Any, level: int, source: dict) -> None:
    w.kv(level, "Type", "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)")
    w.kv(level, "ClaimName", source.get("claimName", ""))
    w.kv(level, "ReadOnly", str(bool(source.get("readOnly", False))).lower())
