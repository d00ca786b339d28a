"""`rollout status|history|undo` for kinds whose history is ControllerRevisions
(StatefulSets), as kubectl's StatefulSetStatusViewer, HistoryViewer and Rollbacker.

- status: done when the controller observed the generation, every wanted pod is ready,
  and, with a partition, `replicas - partition` pods are updated ("partitioned roll out
  complete"); otherwise when currentRevision caught up with updateRevision. Only the
  RollingUpdate strategy has a status, as in kubectl.
- history: the revisions the object controls (by uid), by revision number, with their
  `kubernetes.io/change-cause`; `--revision N` prints that revision's pod template.
- undo: the revision's data (a strategic merge patch of the template) is applied to the
  object; the previous revision when `--to-revision` is not given; a template equal to
  the current one is skipped, as kubectl does.
"""
from __future__ import annotations

import sys
from typing import Any

from kubectl_lite.common import CLIError, qualified

CHANGE_CAUSE = "kubernetes.io/change-cause"
KINDS = {("apps", "StatefulSet")}


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


def status_message(obj: dict) -> tuple[str, bool]:
    return statefulset_status(obj)


def revisions(s: Any, obj: dict) -> list[tuple[int, dict]]:
    md = obj["metadata"]
    items = s.client.list("controllerrevisions", namespace=md.get("namespace")).get("items", [])
    mine = [r for r in items if any(ref.get("controller") and ref.get("uid") == md["uid"]
                                    for ref in r["metadata"].get("ownerReferences") or [])]
    return sorted(((r.get("revision", 0), r) for r in mine), key=lambda x: x[0])


def _template(rev: dict) -> dict:
    import copy
    t = copy.deepcopy((((rev.get("data") or {}).get("spec") or {}).get("template")) or {})
    t.pop("$patch", None)
    return t


def history(s: Any, r: Any, obj: dict, args: Any) -> None:
    from kubectl_lite.describe import W, describe_template
    from kubectl_lite.printers import tabwrite
    name = f"{qualified(r)}/{obj['metadata']['name']}"
    revs = revisions(s, obj)
    if args.revision:
        found = [rev for n, rev in revs if n == args.revision]
        if not found:
            raise CLIError(f"unable to find the specified revision {args.revision}")
        print(f"{name} with revision #{args.revision}")
        w = W()
        describe_template(w, _template(found[0]))
        sys.stdout.write(w.render(align=False))
        print()
        return
    print(f"{name} ")
    if not revs:
        print("No rollout history found.")
        return
    lines = ["REVISION\tCHANGE-CAUSE"]
    lines += [f"{n}\t{((rev['metadata'].get('annotations') or {}).get(CHANGE_CAUSE) or '<none>')}"
              for n, rev in revs]
    sys.stdout.write("".join(line + "\n" for line in tabwrite(lines, minwidth=0, padding=2)))
    print()


def undo(s: Any, r: Any, obj: dict, args: Any) -> None:
    from client.rest import PATCH_TYPES
    md = obj["metadata"]
    name = f"{qualified(r)}/{md['name']}"
    revs = revisions(s, obj)
    if args.to_revision:
        found = [(n, rev) for n, rev in revs if n == args.to_revision]
        if not found:
            raise CLIError(f"unable to find specified revision {args.to_revision} in history")
        number, target = found[0]
    else:
        if len(revs) < 2:
            raise CLIError("no last revision to roll back to")
        number, target = revs[-2]
    if _template(target) == (obj.get("spec") or {}).get("template"):
        print(f"{name} skipped rollback (current template already matches revision {number})")
        return
    if args.dry_run != "client":
        params = {"fieldManager": "kubectl-rollout"}
        if args.dry_run == "server":
            params["dryRun"] = "All"
        s.client.request("PATCH", r.path(namespace=md.get("namespace", ""), name=md["name"]),
                         body=target.get("data") or {}, content_type=PATCH_TYPES["strategic"], params=params)
    suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(args.dry_run, "")
    print(f"{name} rolled back{suffix}")
