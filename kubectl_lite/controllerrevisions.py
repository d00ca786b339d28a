"""`rollout status|history|undo` for the kinds whose history is ControllerRevisions
(DaemonSets and StatefulSets), as kubectl's DaemonSet/StatefulSet StatusViewer,
HistoryViewer and Rollbacker do it.

- status (only RollingUpdate has one): a DaemonSet is done once the controller has
  observed the generation and every node that should run the pod runs an updated,
  available one; a StatefulSet once every wanted pod is ready and, with a partition,
  `replicas - partition` pods are updated ("partitioned roll out complete"), otherwise
  once currentRevision caught up with updateRevision.
- history: the revisions the object controls (selected by its selector, owned by its
  uid), by revision number, with their `kubernetes.io/change-cause`; `--revision=N`
  prints that revision's pod template (its data applied to the object).
- undo: the chosen revision (by default the one before the newest) is applied as the
  strategic merge patch its data is, unless the template already equals it.
"""
from __future__ import annotations

import copy
import sys
from typing import Any

from kubectl_lite.common import CLIError, qualified

CHANGE_CAUSE = "kubernetes.io/change-cause"
KINDS = {("apps", "DaemonSet"), ("apps", "StatefulSet")}


def daemonset_status(ds: dict) -> tuple[str, bool]:
    md, spec, st = ds.get("metadata") or {}, ds.get("spec") or {}, ds.get("status") or {}
    name = md.get("name", "")
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        raise CLIError("rollout status is only available for RollingUpdate strategy type")
    if md.get("generation", 0) <= st.get("observedGeneration", 0):
        desired = st.get("desiredNumberScheduled", 0)
        if st.get("updatedNumberScheduled", 0) < desired:
            return (f'Waiting for daemon set "{name}" rollout to finish: '
                    f'{st.get("updatedNumberScheduled", 0)} out of {desired} new pods have been updated...'), False
        if st.get("numberAvailable", 0) < desired:
            return (f'Waiting for daemon set "{name}" rollout to finish: '
                    f'{st.get("numberAvailable", 0)} of {desired} updated pods are available...'), False
        return f'daemon set "{name}" successfully rolled out', True
    return "Waiting for daemon set spec update to be observed...", False


def statefulset_status(sts: dict) -> tuple[str, bool]:
    spec, st = sts.get("spec") or {}, sts.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        raise CLIError("rollout status is only available for RollingUpdate strategy type")
    if not st.get("observedGeneration") or sts["metadata"].get("generation", 0) > st["observedGeneration"]:
        return "Waiting for statefulset spec update to be observed...", False
    replicas = spec.get("replicas", 1)
    if st.get("readyReplicas", 0) < replicas:
        return f"Waiting for {replicas - st.get('readyReplicas', 0)} pods to be ready...", False
    rolling = strategy.get("rollingUpdate")
    if rolling is not None:
        partition = rolling.get("partition")
        if partition is not None and st.get("updatedReplicas", 0) < replicas - partition:
            return (f"Waiting for partitioned roll out to finish: {st.get('updatedReplicas', 0)} out of "
                    f"{replicas - partition} new pods have been updated..."), False
        return f"partitioned roll out complete: {st.get('updatedReplicas', 0)} new pods have been updated...", True
    if st.get("updateRevision") != st.get("currentRevision"):
        return (f"waiting for statefulset rolling update to complete {st.get('updatedReplicas', 0)} pods at "
                f"revision {st.get('updateRevision')}..."), False
    return (f"statefulset rolling update complete {st.get('currentReplicas', 0)} pods at revision "
            f"{st.get('currentRevision')}..."), True


STATUS = {"DaemonSet": daemonset_status, "StatefulSet": statefulset_status}    # by kind


def revisions(s: Any, obj: dict) -> list[dict]:
    """The ControllerRevisions `obj` controls, oldest revision first."""
    from kubectl_lite.describe import selector_string
    md = obj["metadata"]
    sel = selector_string((obj.get("spec") or {}).get("selector"))
    items = s.client.list("controllerrevisions", namespace=md.get("namespace"),
                          label_selector=None if sel == "<none>" else sel).get("items", [])
    mine = [r for r in items if any(o.get("controller") and o.get("uid") == md.get("uid")
                                    for o in (r.get("metadata") or {}).get("ownerReferences") or [])]
    return sorted(mine, key=lambda r: r.get("revision", 0))


def applied(obj: dict, rev: dict) -> dict:
    """The object with a revision's data applied (its template replaced)."""
    out = copy.deepcopy(obj)
    template = copy.deepcopy(((rev.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    out.setdefault("spec", {})["template"] = template
    return out


def history(s: Any, r: Any, obj: dict, revision: int) -> None:
    from kubectl_lite.describe import W, describe_template
    from kubectl_lite.printers import tabwrite
    name = f"{qualified(r)}/{obj['metadata']['name']}"
    revs = revisions(s, obj)
    if revision:
        found = [x for x in revs if x.get("revision") == revision]
        if not found:
            raise CLIError(f"unable to find the specified revision {revision}")
        print(f"{name} with revision #{revision}")
        w = W()
        describe_template(w, applied(obj, found[0])["spec"]["template"])
        sys.stdout.write(w.render(align=False))
        print()
        return
    print(f"{name} ")
    if not revs:
        print("No rollout history found.")
        return
    lines = ["REVISION\tCHANGE-CAUSE"]
    for x in revs:
        cause = ((x.get("metadata") or {}).get("annotations") or {}).get(CHANGE_CAUSE, "<none>")
        lines.append(f"{x.get('revision', 0)}\t{cause}")
    sys.stdout.write("".join(line + "\n" for line in tabwrite(lines, minwidth=0, padding=2)))
    print()


def undo(s: Any, r: Any, obj: dict, to_revision: int, dry_run: str) -> None:
    from client.rest import PATCH_TYPES
    md = obj["metadata"]
    name = f"{qualified(r)}/{md['name']}"
    revs = revisions(s, obj)
    if to_revision:
        found = [x for x in revs if x.get("revision") == to_revision]
        if not found:
            raise CLIError(f"unable to find specified revision {to_revision} in history")
        target = found[0]
    else:
        if len(revs) <= 1:
            raise CLIError("no last revision to roll back to")
        target = revs[-2]
    number = target.get("revision", 0)
    if applied(obj, target)["spec"]["template"] == (obj.get("spec") or {}).get("template"):
        print(f"{name} skipped rollback (current template already matches revision {number})")
        return
    if dry_run != "client":
        params = {"fieldManager": "kubectl-rollout"}
        if dry_run == "server":
            params["dryRun"] = "All"
        s.client.request("PATCH", r.path(namespace=md.get("namespace", ""), name=md["name"]),
                         body=target.get("data") or {}, content_type=PATCH_TYPES["strategic"], params=params)
    suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(dry_run, "")
    print(f"{name} rolled back{suffix}")
