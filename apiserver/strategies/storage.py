"""core/v1 PersistentVolume and PersistentVolumeClaim, storage.k8s.io/v1 StorageClass:
Kubernetes 1.32's strategies (pkg/registry/core/persistentvolume{,claim}/strategy.go,
pkg/registry/storage/storageclass/strategy.go), validation (pkg/apis/core/validation
ValidatePersistentVolume*/ValidatePersistentVolumeClaim*, pkg/apis/storage/validation)
with their field paths and messages, and two admission plugins kube-apiserver runs by
default:

- StorageObjectInUseProtection: a created PV gets the `kubernetes.io/pv-protection`
  finalizer and a created PVC `kubernetes.io/pvc-protection`; the pv-protection and
  pvc-protection controllers (controller_manager/controllers/persistentvolume.py) remove
  them once the object is no longer in use.
- DefaultStorageClass: a claim created without `spec.storageClassName` (absent, not "")
  gets the default StorageClass (annotation `storageclass.kubernetes.io/is-default-class:
  "true"`; the newest if several are marked). No default: the field stays unset.

A created PV or PVC starts in phase Pending (the binder moves it on); its status changes
through `/status` only. A claim's spec is immutable except a larger
`resources.requests.storage` and a `volumeName` set where it was empty; a volume's source
is immutable, and so are its volumeMode and a nodeAffinity once set. A StorageClass's
provisioner, parameters, reclaimPolicy and volumeBindingMode are immutable.

Pure functions over private copies, as every strategy (see the package docstring).
"""
from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

from apiserver import validation as v
from apiserver.strategies.generic import Strategy

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

Cause = dict[str, str]

PV_PROTECTION = "kubernetes.io/pv-protection"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"

_ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
_RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
_CLASS_RECLAIM_POLICIES = ["Delete", "Retain"]
_VOLUME_MODES = ["Block", "Filesystem"]
_BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]
_NODE_OPERATORS = ["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"]
_HOSTPATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket"]
# The PersistentVolumeSource members (one, and only one, names the volume).
_SOURCES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "glusterfs", "flocker",
            "nfs", "rbd", "quobyte", "cephfs", "iscsi", "cinder", "fc", "flexVolume",
            "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume",
            "azureDisk", "scaleIO", "local", "storageos", "csi")


def is_default_class(sc: dict) -> bool:
    """storageutil.IsDefaultAnnotation."""
    ann = v._m(v._m(sc.get("metadata")).get("annotations"))
    return ann.get(DEFAULT_CLASS_ANNOTATION) == "true" or ann.get(BETA_DEFAULT_CLASS_ANNOTATION) == "true"


def _add_finalizer(obj: dict, name: str) -> None:
    md = obj["metadata"]
    finalizers = md.get("finalizers")
    if not isinstance(finalizers, list):
        finalizers = md["finalizers"] = []
    if name not in finalizers:
        finalizers.append(name)


def _access_modes(modes: Any, f: str, *, detail: str = "") -> list[Cause]:
    if not isinstance(modes, list) or not modes:
        return [v._required(f, detail)]
    out = []
    for mode in modes:
        if mode not in _ACCESS_MODES:
            out.append(v._not_supported(f, mode, _ACCESS_MODES))
    if "ReadWriteOncePod" in modes and any(m in _ACCESS_MODES and m != "ReadWriteOncePod" for m in modes):
        out.append(v._forbidden(f, "may not use ReadWriteOncePod with other access modes"))
    return out


def _positive_quantity(q: Any, f: str) -> list[Cause]:
    value = v.parse_quantity(q)
    if value is None:
        return []  # the schema reports what is not a quantity
    if value <= 0:
        return [v._invalid(f, q, "must be greater than zero")]
    return []


def _class_name(name: Any, f: str) -> list[Cause]:
    if isinstance(name, str) and name and (msg := v._dns1123_subdomain(name)):
        return [v._invalid(f, name, msg)]
    return []


def _node_affinity(na: dict, f: str) -> list[Cause]:
    """validateVolumeNodeAffinity: required terms, each with a valid requirement."""
    req = na.get("required")
    if req is None:
        return [v._required(f"{f}.required", "must specify required node constraints")]
    terms = v._m(req).get("nodeSelectorTerms")
    if not isinstance(terms, list) or not terms:
        return [v._required(f"{f}.required.nodeSelectorTerms", "must have at least one node selector term")]
    out = []
    for i, term in v._each(terms):
        tf = f"{f}.required.nodeSelectorTerms[{i}]"
        for j, e in v._each(term.get("matchExpressions")):
            ef, op, values = f"{tf}.matchExpressions[{j}]", e.get("operator"), e.get("values")
            if op in ("In", "NotIn") and not values:
                out.append(v._required(f"{ef}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
            elif op in ("Exists", "DoesNotExist") and values:
                out.append(v._forbidden(f"{ef}.values", "may not be specified when `operator` is "
                                        "'Exists' or 'DoesNotExist'"))
            elif op not in _NODE_OPERATORS:
                out.append(v._not_supported(f"{ef}.operator", op, _NODE_OPERATORS))
    return out


def _path(p: Any, f: str) -> list[Cause]:
    if not p:
        return [v._required(f)]
    if isinstance(p, str) and ".." in p.split("/"):
        return [v._invalid(f, p, "must not contain '..'")]
    return []


def validate_pv(pv: dict) -> list[Cause]:
    spec, out = v._m(pv.get("spec")), []
    out += _access_modes(spec.get("accessModes"), "spec.accessModes")
    capacity = spec.get("capacity")
    if not isinstance(capacity, dict) or not capacity:
        out.append(v._required("spec.capacity"))
    if not isinstance(capacity, dict) or "storage" not in capacity or len(capacity) > 1:
        out.append(v._not_supported("spec.capacity", capacity if capacity is not None else {}, ["storage"]))
    for key, q in v._m(capacity).items():
        out += _positive_quantity(q, f"spec.capacity[{key}]")
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy and policy not in _RECLAIM_POLICIES:
        out.append(v._not_supported("spec.persistentVolumeReclaimPolicy", policy, _RECLAIM_POLICIES))
    affinity = spec.get("nodeAffinity")
    if isinstance(affinity, dict):
        out += _node_affinity(affinity, "spec.nodeAffinity")
    sources = [s for s in _SOURCES if spec.get(s) is not None]
    for extra in sources[1:]:
        out.append(v._forbidden(f"spec.{extra}", "may not specify more than 1 volume type"))
    if not sources:
        out.append(v._required("spec", "must specify a volume type"))
    elif sources[0] == "hostPath":
        hp = v._m(spec["hostPath"])
        out += _path(hp.get("path"), "spec.hostPath.path")
        if hp.get("type") is not None and hp["type"] not in _HOSTPATH_TYPES:
            out.append(v._not_supported("spec.hostPath.type", hp["type"], _HOSTPATH_TYPES))
        if isinstance(hp.get("path"), str) and posixpath.normpath(hp["path"]) == "/" and policy == "Recycle":
            out.append(v._forbidden("spec.persistentVolumeReclaimPolicy",
                                    "may not be 'recycle' for a hostPath mount of '/'"))
    elif sources[0] == "local":
        out += _path(v._m(spec["local"]).get("path"), "spec.local.path")
        if not isinstance(affinity, dict):
            out.append(v._required("spec.nodeAffinity", "Local volume requires node affinity"))
    out += _class_name(spec.get("storageClassName"), "spec.storageClassName")
    mode = spec.get("volumeMode")
    if mode is not None and mode not in _VOLUME_MODES:
        out.append(v._not_supported("spec.volumeMode", mode, _VOLUME_MODES))
    return out


def validate_pv_update(old: dict, new: dict) -> list[Cause]:
    ospec, nspec, out = v._m(old.get("spec")), v._m(new.get("spec")), []
    if {s: ospec.get(s) for s in _SOURCES} != {s: nspec.get(s) for s in _SOURCES}:
        out.append(v._forbidden("spec.persistentvolumesource",
                                "spec.persistentvolumesource is immutable after creation"))
    if ospec.get("volumeMode") != nspec.get("volumeMode"):
        out.append(v._invalid("volumeMode", nspec.get("volumeMode"), "field is immutable"))
    if ospec.get("nodeAffinity") is not None and ospec["nodeAffinity"] != nspec.get("nodeAffinity"):
        out.append(v._invalid("nodeAffinity", nspec.get("nodeAffinity"), "field is immutable"))
    return out


def validate_pvc(pvc: dict) -> list[Cause]:
    spec, out = v._m(pvc.get("spec")), []
    out += _access_modes(spec.get("accessModes"), "spec.accessModes",
                         detail="at least 1 access mode is required")
    if isinstance(spec.get("selector"), dict):
        out += v._selector(spec["selector"], "spec.selector")
    requests = v._m(v._m(spec.get("resources")).get("requests"))
    if "storage" not in requests:
        out.append(v._required("spec.resources[storage]"))
    else:
        out += _positive_quantity(requests["storage"], "spec.resources[storage]")
    out += _class_name(spec.get("storageClassName"), "spec.storageClassName")
    mode = spec.get("volumeMode")
    if mode is not None and mode not in _VOLUME_MODES:
        out.append(v._not_supported("spec.volumeMode", mode, _VOLUME_MODES))
    return out


def validate_pvc_update(old: dict, new: dict) -> list[Cause]:
    """ValidatePersistentVolumeClaimUpdate: spec immutable but for what binding and
    expansion change."""
    ospec, nspec = dict(v._m(old.get("spec"))), dict(v._m(new.get("spec")))
    out: list[Cause] = []
    # The binder fills an empty volumeName; expansion raises the request.
    if not ospec.get("volumeName") and "volumeName" in nspec:
        ospec["volumeName"] = nspec["volumeName"]
    old_size = v.parse_quantity(v._m(v._m(ospec.get("resources")).get("requests")).get("storage"))
    new_size = v.parse_quantity(v._m(v._m(nspec.get("resources")).get("requests")).get("storage"))
    bound = v._m(new.get("status")).get("phase") == "Bound"
    if bound:
        for spec in (ospec, nspec):
            resources = dict(v._m(spec.get("resources")))
            resources["requests"] = {k: x for k, x in v._m(resources.get("requests")).items() if k != "storage"}
            spec["resources"] = resources
    if ospec != nspec:
        out.append(v._forbidden("spec", "spec is immutable after creation except resources.requests "
                                "and volumeAttributesClassName for bound claims"))
    elif old_size is not None and new_size is not None and new_size < old_size:
        out.append(v._forbidden("spec.resources.requests.storage", "field can not be less than previous value"))
    return out


def validate_storageclass(sc: dict) -> list[Cause]:
    out = []
    provisioner = sc.get("provisioner")
    if not provisioner:
        out.append(v._required("provisioner"))
    elif isinstance(provisioner, str):
        if len(provisioner) > 63:
            out.append(v._too_long("provisioner", 63))
        elif msg := v._qualified_name(provisioner.lower()):
            out.append(v._invalid("provisioner", provisioner, msg))
    policy = sc.get("reclaimPolicy")
    if policy not in _CLASS_RECLAIM_POLICIES:
        out.append(v._not_supported("reclaimPolicy", policy, _CLASS_RECLAIM_POLICIES))
    mode = sc.get("volumeBindingMode")
    if mode not in _BINDING_MODES:
        out.append(v._not_supported("volumeBindingMode", mode, _BINDING_MODES))
    return out


def validate_storageclass_update(old: dict, new: dict) -> list[Cause]:
    out = []
    for key in ("parameters", "provisioner", "reclaimPolicy"):
        if old.get(key) != new.get(key):
            out.append(v._forbidden(key, f"updates to {key} are forbidden."))
    if old.get("volumeBindingMode") != new.get("volumeBindingMode"):
        out.append(v._invalid("volumeBindingMode", new.get("volumeBindingMode"), "field is immutable"))
    return out


def _pending_status(obj: dict) -> None:
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    status.setdefault("phase", "Pending")


class PersistentVolumeStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        _pending_status(obj)
        _add_finalizer(obj, PV_PROTECTION)  # StorageObjectInUseProtection

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_pv(obj)
        if old is not None:
            causes += validate_pv_update(old, obj)
        return causes


class PersistentVolumeClaimStrategy(Strategy):
    admission_plugin = "DefaultStorageClass"

    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        _pending_status(obj)
        _add_finalizer(obj, PVC_PROTECTION)  # StorageObjectInUseProtection

    def admission_refs(self, obj: dict) -> list[tuple[str, str]]:
        spec = obj.get("spec")
        if isinstance(spec, dict) and "storageClassName" not in spec:
            return [("storageclasses", "")]  # "": every StorageClass
        return []

    def admit_create(self, obj: dict, found: dict[tuple[str, str], dict | None], *, name: str) -> None:
        """DefaultStorageClass: the newest default class, by creation time then name."""
        classes = (found.get(("storageclasses", "")) or {}).get("items") or []
        defaults = [sc for sc in classes if is_default_class(sc)]
        if not defaults:
            return
        newest = max(defaults, key=lambda sc: (sc["metadata"].get("creationTimestamp", ""),
                                               sc["metadata"].get("name", "")))
        obj["spec"]["storageClassName"] = newest["metadata"]["name"]

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_pvc(obj)
        if old is not None:
            causes += validate_pvc_update(old, obj)
        return causes


class StorageClassStrategy(Strategy):
    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_storageclass(obj)
        if old is not None:
            causes += validate_storageclass_update(old, obj)
        return causes
