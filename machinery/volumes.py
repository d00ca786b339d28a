"""Persistent volume matching, shared by the PV binder (controller_manager), the
scheduler's VolumeBinding plugin and the kubelet: the pure parts of Kubernetes'
pkg/controller/volume/persistentvolume/util and component-helpers/storage/volume.

- `claim_class`/`volume_class`: a claim's or volume's storage class (the beta annotation
  wins over the field, as upstream's GetPersistentVolume(Claim)Class).
- `volume_fits_node`: a volume's required nodeAffinity admits a node (CheckNodeAffinity:
  terms ORed, requirements within a term ANDed; no affinity fits every node).
- `bound_to`: a volume's claimRef names the claim (and its uid, when it has one).
- `find_best_match`: the volume a claim binds (FindMatchingVolume): one pre-bound to
  it first; else the smallest Available volume of the claim's class, volumeMode and
  selector whose access modes include the claim's and whose capacity fits.

Pure data in, data out: no I/O, importable from anywhere.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from machinery import labels
from machinery.quantity import parse_quantity

BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
BETA_CLASS = "volume.beta.kubernetes.io/storage-class"

Obj = Mapping[str, Any]


def _m(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def claim_class(claim: Obj) -> str:
    ann = _m(_m(claim.get("metadata")).get("annotations"))
    if BETA_CLASS in ann:
        return str(ann[BETA_CLASS])
    return str(_m(claim.get("spec")).get("storageClassName") or "")


def volume_class(volume: Obj) -> str:
    ann = _m(_m(volume.get("metadata")).get("annotations"))
    if BETA_CLASS in ann:
        return str(ann[BETA_CLASS])
    return str(_m(volume.get("spec")).get("storageClassName") or "")


def storage(resources: Any) -> float:
    """The `storage` quantity of a resource list, in bytes (0 when absent or malformed)."""
    try:
        return float(parse_quantity(_m(resources).get("storage", "0")))
    except (ValueError, TypeError):
        return 0.0


def _requirement(expr: Obj, node_labels: Mapping[str, str], node_name: str, *, field: bool) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), list(expr.get("values") or [])
    value: str | None
    if field:
        value = node_name if key == "metadata.name" else None
    else:
        value = node_labels.get(key)
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
        except ValueError:
            return False
    return False


def volume_fits_node(volume: Obj, node_name: str, node_labels: Mapping[str, str]) -> bool:
    affinity = _m(_m(volume.get("spec")).get("nodeAffinity"))
    if not affinity:
        return True
    for term in _m(affinity.get("required")).get("nodeSelectorTerms") or []:
        exprs, fields = _m(term).get("matchExpressions") or [], _m(term).get("matchFields") or []
        if not exprs and not fields:
            continue
        if all(_requirement(_m(e), node_labels, node_name, field=False) for e in exprs) and \
                all(_requirement(_m(e), node_labels, node_name, field=True) for e in fields):
            return True
    return False


def bound_to(volume: Obj, claim: Obj) -> bool:
    ref = _m(_m(volume.get("spec")).get("claimRef"))
    if not ref:
        return False
    md = _m(claim.get("metadata"))
    if ref.get("name") != md.get("name") or ref.get("namespace") != md.get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == md.get("uid")


def find_best_match(volumes: Iterable[Obj], claim: Obj, *,
                    node: tuple[str, Mapping[str, str]] | None = None) -> Obj | None:
    """`node` (name, labels), when given, leaves out volumes whose affinity refuses it."""
    spec = _m(claim.get("spec"))
    want = storage(_m(spec.get("resources")).get("requests"))
    modes = set(spec.get("accessModes") or [])
    mode = spec.get("volumeMode") or "Filesystem"
    klass = claim_class(claim)
    selector = spec.get("selector")
    best: Obj | None = None
    for volume in volumes:
        vspec = _m(volume.get("spec"))
        if _m(volume.get("metadata")).get("deletionTimestamp"):
            continue
        if (vspec.get("volumeMode") or "Filesystem") != mode:
            continue
        if node is not None and not volume_fits_node(volume, node[0], node[1]):
            continue
        if bound_to(volume, claim):
            return volume
        if vspec.get("claimRef"):
            continue
        if _m(volume.get("status")).get("phase") not in (None, "Pending", "Available"):
            continue
        if volume_class(volume) != klass:
            continue
        if selector is not None:
            try:
                sel = labels.from_label_selector(selector)
            except ValueError:
                continue
            if not sel.matches(_m(_m(volume.get("metadata")).get("labels"))):
                continue
        if not modes <= set(vspec.get("accessModes") or []):
            continue
        size = storage(vspec.get("capacity"))
        if size < want:
            continue
        if best is None or size < storage(_m(best.get("spec")).get("capacity")):
            best = volume
    return best
