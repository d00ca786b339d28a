"""`rollout status|history|undo|restart|pause|resume` for Deployments, and
status|history|undo|restart for DaemonSets and StatefulSets (kubectl_lite/controllerrevisions.py:
their history is ControllerRevisions).

status follows kubectl's DeploymentStatusViewer: done when the controller has observed
the current generation (`status.observedGeneration >= metadata.generation`) and
`updatedReplicas == spec.replicas == replicas == availableReplicas`; until then it prints
kubectl's progress line each time it changes, reading the Deployment from a watch that
starts at the resourceVersion of the first read (so no update is missed). `--timeout`
bounds the wait: past it the command fails with kubectl's "timed out" error.

history and undo read the Deployment's ReplicaSets (owned by it, selected by its
selector), ordered by their `deployment.kubernetes.io/revision` annotation; undo puts
the chosen revision's pod template (minus `pod-template-hash`) back into the Deployment.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from kubectl_lite.common import CLIError, Parser, plural_qualified, qualified, split_type_name

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
ACTIONS = ("status", "history", "undo", "restart", "pause", "resume")
# Annotations of a ReplicaSet that are the controller's, not the user's (kubectl skips them).
_SKIP_ANNOTATIONS = {"kubectl.kubernetes.io/last-applied-configuration", REVISION,
                     "deployment.kubernetes.io/revision-history",
                     "deployment.kubernetes.io/desired-replicas",
                     "deployment.kubernetes.io/max-replicas"}


def add_rollout(p: Parser) -> None:
    p.add_argument("action", choices=ACTIONS, metavar="{" + "|".join(ACTIONS) + "}")
    p.add_argument("args", nargs="*", metavar="TYPE NAME | TYPE/NAME")
    p.add_argument("--timeout", default="0s", help="status: how long to wait (0: forever)")
    p.add_bool("--watch", "-w", default=True, help="status: wait until the rollout finishes")
    p.add_argument("--revision", type=int, default=0, help="history: show this revision's template")
    p.add_argument("--to-revision", type=int, default=0, help="undo: the revision to go back to "
                                                             "(0: the previous one)")
    p.add_argument("-l", "--selector", default=None)
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")
    p.add_argument("--dry-run", nargs="?", const="client", default="none",
                   choices=("none", "client", "server"))


def _deployments(s: Any, args: Any) -> list[tuple[Any, dict]]:
    out = []
    if args.filename:
        from kubectl_lite.manifests import read_documents
        for d in read_documents(args.filename, recursive=args.recursive):
            r = s.for_object(d.obj, d.source)
            out.append((r, s.client.get(r, d.obj["metadata"]["name"],
                                        namespace=s.namespace_of(r, d.obj) or None)))
    for kind, names in split_type_name(args.args):
        r = s.resource(kind)
        if names:
            out += [(r, s.client.get(r, n)) for n in names]
        elif args.selector:
            out += [(r, o) for o in s.client.list(r, label_selector=args.selector).get("items", [])]
        else:
            raise CLIError(f"resource(s) were provided, but no name was specified for {kind}")
    if not out:
        raise CLIError("required resource not specified")
    from kubectl_lite import controllerrevisions
    for r, obj in out:
        if (r.group, r.kind) in controllerrevisions.KINDS and args.action in ("pause", "resume"):
            raise CLIError(f'{plural_qualified(r)} "{obj["metadata"]["name"]}" '
                           f'{"pausing" if args.action == "pause" else "resuming"} is not supported')
        if not _is_deployment(r) and (r.group, r.kind) not in controllerrevisions.KINDS:
            raise CLIError(f"no {args.action} support for {r.api_version}, Kind={r.kind}: "
                           "rollout works on Deployments, DaemonSets and StatefulSets")
    return out


def _is_deployment(r: Any) -> bool:
    return (r.group, r.kind) == ("apps", "Deployment")


def run_rollout(args: Any, s: Any) -> int:
    return {"status": status, "history": history, "undo": undo, "restart": restart,
            "pause": pause, "resume": resume}[args.action](s, args)


# -- status ------------------------------------------------------------------------------

def status_message(d: dict) -> tuple[str, bool]:
    """kubectl's DeploymentStatusViewer.Status: (message, done). Raises CLIError when the
    rollout exceeded its progress deadline."""
    md, spec, st = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    name = md.get("name", "")
    if md.get("generation", 0) <= st.get("observedGeneration", 0):
        for c in st.get("conditions") or []:
            if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
                raise CLIError(f'deployment "{name}" exceeded its progress deadline')
        want = spec.get("replicas", 1)
        updated, total = st.get("updatedReplicas", 0), st.get("replicas", 0)
        available = st.get("availableReplicas", 0)
        if updated < want:
            return (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {want} '
                    "new replicas have been updated..."), False
        if total > updated:
            return (f'Waiting for deployment "{name}" rollout to finish: {total - updated} old '
                    "replicas are pending termination..."), False
        if available < updated:
            return (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
                    "updated replicas are available..."), False
        return f'deployment "{name}" successfully rolled out', True
    return "Waiting for deployment spec update to be observed...", False


def status(s: Any, args: Any) -> int:
    from client.watch import Watch
    from kubectl_lite.apply import _seconds
    targets = _deployments(s, args)
    if len(targets) != 1:
        raise CLIError("rollout status takes exactly one deployment")
    r, d = targets[0]
    from kubectl_lite import controllerrevisions
    viewer = status_message if _is_deployment(r) else controllerrevisions.STATUS[r.kind]
    timeout = _seconds(args.timeout)
    deadline = time.monotonic() + timeout if timeout else None
    last = None

    def show(obj: dict) -> bool:
        nonlocal last
        msg, done = viewer(obj)
        if msg != last:
            print(msg, flush=True)
            last = msg
        return done
    if show(d) or not args.watch:
        return 0
    md = d["metadata"]
    w = Watch(s.client.aio, r, namespace=md.get("namespace"),
              field_selector=f"metadata.name={md['name']}",
              resource_version=md.get("resourceVersion", ""))
    try:
        for ev in s.client.iterate(w, deadline=deadline):
            if ev.type == "DELETED":
                raise CLIError(f'{r.singular} "{md["name"]}" was deleted')
            if ev.type in ("ADDED", "MODIFIED") and show(ev.object):
                return 0
    except TimeoutError:
        raise CLIError("timed out waiting for the condition") from None
    return 1


# -- history / undo ----------------------------------------------------------------------

def _history(s: Any, d: dict) -> list[tuple[int, dict]]:
    from kubectl_lite.describe import owned_replicasets, revision
    return sorted(((revision(rs), rs) for rs in owned_replicasets(s, d)), key=lambda x: x[0])


def history(s: Any, args: Any) -> int:
    from kubectl_lite.describe import W, describe_template
    from kubectl_lite.printers import tabwrite
    from kubectl_lite import controllerrevisions
    for r, d in _deployments(s, args):
        if not _is_deployment(r):
            controllerrevisions.history(s, r, d, args.revision)
            continue
        name = f"{qualified(r)}/{d['metadata']['name']}"
        revs = [(n, rs) for n, rs in _history(s, d) if n > 0]
        if args.revision:
            found = [rs for n, rs in revs if n == args.revision]
            if not found:
                raise CLIError("unable to find the specified revision")
            print(f"{name} with revision #{args.revision}")
            w = W()
            describe_template(w, (found[0].get("spec") or {}).get("template") or {})
            sys.stdout.write(w.render(align=False))  # kubectl prints these tabs unaligned
            print()
            continue
        print(f"{name} ")
        if not revs:
            print("No rollout history found.")
            continue
        lines = ["REVISION\tCHANGE-CAUSE"]
        seen: dict[int, str] = {}
        for n, rs in revs:
            seen[n] = ((rs.get("metadata") or {}).get("annotations") or {}).get(CHANGE_CAUSE, "<none>")
        lines += [f"{n}\t{cause}" for n, cause in sorted(seen.items())]
        sys.stdout.write("".join(line + "\n" for line in tabwrite(lines, minwidth=0, padding=2)))
        print()
    return 0


def _template(rs: dict) -> dict:
    import copy
    t = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop("pod-template-hash", None)
    return t


def undo(s: Any, args: Any) -> int:
    from client.rest import PATCH_TYPES
    from kubectl_lite import controllerrevisions
    for r, d in _deployments(s, args):
        if not _is_deployment(r):
            controllerrevisions.undo(s, r, d, args.to_revision, args.dry_run)
            continue
        md = d["metadata"]
        name = f"{qualified(r)}/{md['name']}"
        if (d.get("spec") or {}).get("paused"):
            raise CLIError("you cannot rollback a paused deployment; resume it first with "
                           "'kubectl-lite rollout resume' and try again")
        revs = _history(s, d)
        if not revs:
            raise CLIError(f'no rollout history found for deployment "{md["name"]}"')
        if args.to_revision:
            found = [rs for n, rs in revs if n == args.to_revision]
            if not found:
                raise CLIError(f"unable to find specified revision {args.to_revision} in history")
            target, number = found[0], args.to_revision
        else:
            if len(revs) < 2:
                raise CLIError("no last revision to roll back to")
            number, target = revs[-2]
        template = _template(target)
        if template == (d.get("spec") or {}).get("template"):
            print(f"{name} skipped rollback (current template already matches revision {number})")
            continue
        annotations = dict(md.get("annotations") or {})
        for k, v in ((target.get("metadata") or {}).get("annotations") or {}).items():
            if k not in _SKIP_ANNOTATIONS:
                annotations[k] = v
        patch = [{"op": "replace", "path": "/spec/template", "value": template},
                 {"op": "replace", "path": "/metadata/annotations", "value": annotations}]
        if args.dry_run != "client":
            params = {"fieldManager": "kubectl-rollout"}
            if args.dry_run == "server":
                params["dryRun"] = "All"
            s.client.request("PATCH", r.path(namespace=md.get("namespace", ""), name=md["name"]),
                             body=patch, content_type=PATCH_TYPES["json"], params=params)
        suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(args.dry_run, "")
        print(f"{name} rolled back{suffix}")
    return 0


# -- restart / pause / resume ------------------------------------------------------------

def _patch(s: Any, r: Any, d: dict, patch: dict, args: Any) -> None:
    if args.dry_run == "client":
        return
    md = d["metadata"]
    params = {"fieldManager": "kubectl-rollout"}
    if args.dry_run == "server":
        params["dryRun"] = "All"
    from client.rest import PATCH_TYPES
    s.client.request("PATCH", r.path(namespace=md.get("namespace", ""), name=md["name"]),
                     body=patch, content_type=PATCH_TYPES["strategic"], params=params)


def restart(s: Any, args: Any) -> int:
    import datetime as dt
    now = dt.datetime.now().astimezone().replace(microsecond=0).isoformat()
    for r, d in _deployments(s, args):
        if (d.get("spec") or {}).get("paused"):
            raise CLIError(f'{plural_qualified(r)} "{d["metadata"]["name"]}" can\'t restart paused '
                           "deployment (run rollout resume first)")
        _patch(s, r, d, {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}},
               args)
        print(f"{qualified(r)}/{d['metadata']['name']} restarted")
    return 0


def pause(s: Any, args: Any) -> int:
    return _set_paused(s, args, True)


def resume(s: Any, args: Any) -> int:
    return _set_paused(s, args, False)


def _set_paused(s: Any, args: Any, paused: bool) -> int:
    for r, d in _deployments(s, args):
        if bool((d.get("spec") or {}).get("paused")) == paused:
            raise CLIError(f'{plural_qualified(r)} "{d["metadata"]["name"]}" is '
                           f'{"already paused" if paused else "not paused"}')
        _patch(s, r, d, {"spec": {"paused": paused}}, args)
        print(f"{qualified(r)}/{d['metadata']['name']} {'paused' if paused else 'resumed'}")
    return 0
