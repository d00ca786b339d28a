"""`kubectl-lite autoscale TYPE NAME --max=N [--min=N] [--cpu-percent=N]`: kubectl 1.32's
autoscale. It makes an autoscaling/v1 HorizontalPodAutoscaler (named after the target
unless --name says otherwise) for a Deployment, ReplicaSet, ReplicationController or
StatefulSet, as kubectl does, with field manager kubectl-autoscale; --dry-run and
-o name|yaml|json as kubectl's. Bad flags are one kubectl-worded line and change nothing.
"""
from __future__ import annotations

from typing import Any

from kubectl_lite.common import CLIError, Parser, qualified
from kubectl_lite.mutate import _dry_flag, _ns, _params, _print_obj, _suffix, _targets

# polymorphichelpers.CanBeAutoscaled
SCALABLE = {("apps", "Deployment"), ("apps", "ReplicaSet"), ("", "ReplicationController"),
            ("apps", "StatefulSet")}


def add_autoscale(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE NAME | TYPE/NAME")
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")
    p.add_argument("--min", type=int, default=-1,
                   help="The lower limit for the number of pods that can be set by the autoscaler")
    p.add_argument("--max", type=int, default=-1,
                   help="The upper limit for the number of pods that can be set by the autoscaler")
    p.add_argument("--cpu-percent", type=int, default=-1,
                   help="The target average CPU utilization (represented as a percent of requested CPU)")
    p.add_argument("--name", default="", help="The name for the newly created object")
    p.add_argument("--field-manager", default="kubectl-autoscale")
    p.add_argument("-o", "--output", default="")
    _dry_flag(p)


def hpa_for(r: Any, target: dict, args: Any) -> dict:
    """The autoscaling/v1 HorizontalPodAutoscaler kubectl's HPA generator makes."""
    spec: dict[str, Any] = {"scaleTargetRef": {"apiVersion": r.api_version, "kind": r.kind,
                                               "name": target["metadata"]["name"]},
                            "maxReplicas": args.max}
    if args.min > 0:
        spec["minReplicas"] = args.min
    if args.cpu_percent >= 0:
        spec["targetCPUUtilizationPercentage"] = args.cpu_percent
    return {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": args.name or target["metadata"]["name"]}, "spec": spec}


def run_autoscale(args: Any, s: Any) -> int:
    if args.max < 1:
        raise CLIError(f"--max=MAXPODS is required and must be at least 1, max: {args.max}")
    if args.max < args.min:
        raise CLIError(f"--max=MAXPODS must be larger or equal to --min=MINPODS, max: {args.max}, min: {args.min}")
    hpas = s.resource("horizontalpodautoscalers")
    for r, target in _targets(s, args, args.args):
        if (r.group, r.kind) not in SCALABLE:
            raise CLIError(f"cannot autoscale a {r.kind}: {qualified(r)}/{target['metadata']['name']}")
        hpa = hpa_for(r, target, args)
        namespace = _ns(target) or ""
        path = f"/apis/autoscaling/v1/namespaces/{namespace}/horizontalpodautoscalers"
        if args.dry_run != "client":
            hpa = s.client.request("POST", path, body=hpa, params=_params(args, "kubectl-autoscale"))
        if args.output:
            _print_obj(args.output, hpas, hpa)
        else:
            print(f"{qualified(hpas)}/{hpa['metadata']['name']} autoscaled{_suffix(args)}")
    return 0
