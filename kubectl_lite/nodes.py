"""`cordon`, `uncordon` and `drain`, with kubectl's checks and messages.

drain = cordon, then evict every pod on the node that may go: pods of a DaemonSet are
refused (or skipped with --ignore-daemonsets), pods no controller would re-create are
refused unless --force, pods with emptyDir data unless --delete-emptydir-data, mirror
pods are never touched. Eviction is respectful: `POST pods/{name}/eviction` (which a
disruption budget may refuse with 429: retried every 5 s), falling back to a DELETE
when the server does not serve evictions; both honour the pod's grace period unless
--grace-period says otherwise. drain then waits until each pod is gone and reports it,
and fails (non-zero) if --timeout passes first.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from kubectl_lite.common import CLIError, Parser, warn

MIRROR = "kubernetes.io/config.mirror"


def _common(p: Parser) -> None:
    p.add_argument("nodes", nargs="*", metavar="NODE")
    p.add_argument("-l", "--selector", default=None)
    p.add_argument("--dry-run", nargs="?", const="client", default="none",
                   choices=("none", "client", "server"))


def add_cordon(p: Parser) -> None:
    _common(p)


def add_uncordon(p: Parser) -> None:
    _common(p)


def add_drain(p: Parser) -> None:
    _common(p)
    p.add_bool("--force", help="Also delete pods no controller manages")
    p.add_bool("--ignore-daemonsets", help="Skip DaemonSet-managed pods")
    p.add_bool("--delete-emptydir-data", help="Also delete pods using emptyDir (data is lost)")
    p.add_bool("--disable-eviction", help="Delete pods instead of evicting them")
    p.add_argument("--grace-period", type=int, default=-1,
                   help="Seconds each pod has to terminate (-1: the pod's own)")
    p.add_argument("--timeout", default="0s", help="Give up after this long (0: never)")
    p.add_argument("--pod-selector", default=None, help="Only the pods matching this selector")
    p.add_argument("--chunk-size", default=None, help="(accepted for compatibility; ignored)")


def _nodes(s: Any, args: Any) -> list[dict]:
    r = s.resource("nodes")
    if args.selector:
        from kubectl_lite.get import check_selectors
        check_selectors(args)
        nodes = s.client.list(r, label_selector=args.selector).get("items", [])
        if not nodes:
            raise CLIError(f"no nodes match the selector {args.selector!r}")
        return nodes
    if not args.nodes:
        raise CLIError("USAGE: NODE [NODE...] or -l SELECTOR")
    return [s.client.get(r, n) for n in args.nodes]


def _suffix(args: Any) -> str:
    return {"client": " (dry run)", "server": " (server dry run)"}.get(args.dry_run, "")


def _set_unschedulable(s: Any, node: dict, value: bool, args: Any) -> None:
    name = node["metadata"]["name"]
    verb = "cordoned" if value else "uncordoned"
    if bool((node.get("spec") or {}).get("unschedulable")) == value:
        print(f"node/{name} already {verb}")
        return
    if args.dry_run != "client":
        params = {"fieldManager": "kubectl-cordon"}
        if args.dry_run == "server":
            params["dryRun"] = "All"
        s.client.request("PATCH", s.resource("nodes").path(name=name),
                         body={"spec": {"unschedulable": True if value else None}},
                         content_type="application/strategic-merge-patch+json", params=params)
    print(f"node/{name} {verb}{_suffix(args)}")


def run_cordon(args: Any, s: Any) -> int:
    for node in _nodes(s, args):
        _set_unschedulable(s, node, True, args)
    return 0


def run_uncordon(args: Any, s: Any) -> int:
    for node in _nodes(s, args):
        _set_unschedulable(s, node, False, args)
    return 0


def _controller(pod: dict) -> dict | None:
    return next((o for o in (pod.get("metadata") or {}).get("ownerReferences") or []
                 if o.get("controller")), None)


def classify(pods: list[dict], args: Any) -> tuple[list[dict], list[str], list[str]]:
    """kubectl's drain filters: (pods to evict, warnings, errors)."""
    keep: list[dict] = []
    problems: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}

    def ref(p: dict) -> str:
        return f"{p['metadata'].get('namespace', '')}/{p['metadata']['name']}"
    for p in pods:
        md = p["metadata"]
        if MIRROR in (md.get("annotations") or {}):
            continue
        finished = (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        ctrl = _controller(p)
        if ctrl and ctrl.get("kind") == "DaemonSet":
            if args.ignore_daemonsets:
                notes.setdefault("ignoring DaemonSet-managed Pods", []).append(ref(p))
            else:
                problems.setdefault("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets "
                                    "to ignore)", []).append(ref(p))
            continue
        if not finished and any("emptyDir" in v for v in (p.get("spec") or {}).get("volumes") or []):
            if args.delete_emptydir_data:
                notes.setdefault("deleting Pods with local storage", []).append(ref(p))
            else:
                problems.setdefault("cannot delete Pods with local storage (use "
                                    "--delete-emptydir-data to override)", []).append(ref(p))
                continue
        if not finished and ctrl is None:
            if args.force:
                notes.setdefault("deleting Pods that declare no controller", []).append(ref(p))
            else:
                problems.setdefault("cannot delete Pods that declare no controller (use --force to "
                                    "override)", []).append(ref(p))
                continue
        keep.append(p)
    warnings = [f"{what}: {', '.join(refs)}" for what, refs in notes.items()]
    errors = [f"{what}: {', '.join(refs)}" for what, refs in problems.items()]
    return keep, warnings, errors


def run_drain(args: Any, s: Any) -> int:
    from kubectl_lite.apply import _seconds
    from kubectl_lite.session import ALL
    timeout = _seconds(args.timeout)
    deadline = time.monotonic() + timeout if timeout else None
    failed: list[str] = []
    last_error = ""
    for node in _nodes(s, args):
        name = node["metadata"]["name"]
        _set_unschedulable(s, node, True, args)
        pods = s.client.list("pods", namespace=ALL, field_selector=f"spec.nodeName={name}",
                             label_selector=args.pod_selector).get("items", [])
        keep, warnings, errors = classify(pods, args)
        if errors:
            last_error = "; ".join(errors)
            print(f'error: unable to drain node "{name}" due to error: {last_error}, '
                  "continuing command...", file=sys.stderr)
            failed.append(name)
            continue
        for w in warnings:
            warn(w)
        try:
            evict_all(s, keep, args, deadline)
        except CLIError as err:
            last_error = err.message
            print(f'error: unable to drain node "{name}" due to error: {last_error}, '
                  "continuing command...", file=sys.stderr)
            failed.append(name)
            continue
        print(f"node/{name} drained{_suffix(args)}")
    if failed:
        print("There are pending nodes to be drained:", file=sys.stderr)
        for n in failed:
            print(f" {n}", file=sys.stderr)
        raise CLIError(last_error)
    return 0


def evict_all(s: Any, pods: list[dict], args: Any, deadline: float | None) -> None:
    import httpx

    from machinery.errors import APIError, NotFound, TooManyRequests
    pending: list[tuple[dict, str]] = []
    use_eviction = not args.disable_eviction
    grace = None if args.grace_period < 0 else args.grace_period
    pods_r = s.resource("pods")
    for p in pods:
        md = p["metadata"]
        ns, name = md.get("namespace", ""), md["name"]
        dropped = 0
        while True:
            try:
                if use_eviction:
                    print(f"evicting pod {ns}/{name}{_suffix(args)}")
                    body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                            "metadata": {"name": name, "namespace": ns}}
                    if grace is not None:
                        body["deleteOptions"] = {"gracePeriodSeconds": grace}
                    if args.dry_run == "server":
                        body.setdefault("deleteOptions", {})["dryRun"] = ["All"]
                    if args.dry_run != "client":
                        s.client.request("POST", pods_r.path(namespace=ns, name=name,
                                                             subresource="eviction"), body=body)
                elif args.dry_run != "client":
                    s.client.delete(pods_r, name, namespace=ns, grace_period_seconds=grace,
                                    dry_run=args.dry_run == "server")
                break
            except NotFound as err:
                if use_eviction and err.name != name:
                    use_eviction = False  # the server does not serve evictions: delete
                    continue
                break  # the pod is gone already
            except httpx.RemoteProtocolError:
                # The server closed the kept-alive connection the 5 s wait left idle just as
                # the request went out. Asking again is safe: evicting a pod that is already
                # going deletes nothing more, and one that is gone answers NotFound.
                dropped += 1
                if dropped > 3:
                    raise
            except TooManyRequests as err:
                print(f'error when evicting pods/"{name}" -n "{ns}" (will retry after 5s): '
                      f"{err.message}", file=sys.stderr)
                if deadline is not None and time.monotonic() + 5 > deadline:
                    raise CLIError(f'error when evicting pods/"{name}" -n "{ns}": global timeout '
                                   "reached") from None
                time.sleep(5)
            except APIError as err:
                if use_eviction and err.code in (404, 405):
                    use_eviction = False
                    continue
                raise CLIError(f'error when evicting pods/"{name}" -n "{ns}": {err.message}') from None
        pending.append((p, "evicted" if use_eviction else "deleted"))
    if args.dry_run != "none":
        return
    delay = 0.02
    while pending:
        still = []
        for p, word in pending:
            md = p["metadata"]
            try:
                cur = s.client.get(pods_r, md["name"], namespace=md.get("namespace"))
            except NotFound:
                cur = None
            if cur is None or cur["metadata"].get("uid") != md.get("uid"):
                print(f"pod/{md['name']} {word}", flush=True)
            else:
                still.append((p, word))
        pending = still
        if not pending:
            return
        if deadline is not None and time.monotonic() > deadline:
            p = pending[0][0]["metadata"]
            raise CLIError(f'error when waiting for pod "{p["name"]}" in namespace '
                           f'"{p.get("namespace", "")}" to terminate: global timeout reached: '
                           f"{args.timeout}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
