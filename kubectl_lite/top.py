"""`top pods|nodes`: resource usage from the metrics API, as kubectl top prints it
(pkg/cmd/top, pkg/metricsutil).

- The server's discovery must list metrics.k8s.io/v1beta1, else `error: Metrics API not
  available`.
- pods: NAME CPU(cores) MEMORY(bytes) (NAMESPACE first with -A, POD before NAME with
  --containers); a pod's usage is its containers' sum. CPU is printed in millicores
  rounded up (`%vm` of MilliValue), memory in whole MiB rounded down (`Value()/2^20`).
  Rows sorted by (namespace and) name, or descending by --sort-by cpu|memory. No metrics:
  the pods exist and one is older than 2 minutes: `Metrics not available for pod ns/x,
  age: ...`; they exist and are younger: `metrics not available yet`; none exist: `No
  resources found in NS namespace.` on stderr, exit 0.
- nodes: NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%) (kubectl 1.32's headers) against each node's allocatable
  (--show-capacity: capacity); a listed node without metrics is a line of `<unknown>`;
  no metrics at all: `metrics not available yet`.
- A name and a selector together, a --sort-by other than cpu or memory: kubectl's errors.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any

from kubectl_lite.common import CLIError, Parser
from kubectl_lite.printers import print_lines, tabwrite

GROUP_VERSION = "metrics.k8s.io/v1beta1"
API = f"/apis/{GROUP_VERSION}"
METRICS_CREATION_DELAY = 120.0  # kubectl's metricsCreationDelay
POD_NAMES, NODE_NAMES = ("pods", "pod", "po"), ("nodes", "node", "no")


def add_top(p: Parser) -> None:
    p.add_argument("what", nargs="?", metavar="pod|node")
    p.add_argument("name", nargs="?")
    p.add_argument("-l", "--selector", default="", help="Selector (label query) to filter on")
    p.add_argument("--field-selector", default="", help="Selector (field query) to filter on (pods)")
    p.add_argument("--sort-by", default="", help="Sort by 'cpu' or 'memory'")
    p.add_bool("--containers", help="Print usage of containers within a pod")
    p.add_bool("-A", "--all-namespaces", help="List the pods across all namespaces")
    p.add_bool("--no-headers", help="Print output without headers")
    p.add_bool("--show-capacity", help="Print node resources based on Capacity instead of Allocatable")
    p.add_bool("--use-protocol-buffers", default=True, help="(accepted for compatibility)")


def run_top(args: Any, s: Any) -> int:
    if args.what in POD_NAMES:
        return _top_pods(args, s)
    if args.what in NODE_NAMES:
        return _top_nodes(args, s)
    if args.what is None:
        raise CLIError("You must specify the type of resource to get usage of: pod or node "
                       "(e.g. 'kubectl-lite top pod')")
    raise CLIError(f'unknown command "{args.what}" for "kubectl top"')


def _validate(args: Any) -> None:
    if args.sort_by and args.sort_by not in ("cpu", "memory"):
        raise CLIError("--sort-by accepts only cpu or memory")


def _require_metrics_api(s: Any) -> None:
    groups = s.client.request("GET", "/apis") or {}
    for g in groups.get("groups") or []:
        if g.get("name") == "metrics.k8s.io" and any(
                v.get("version") == "v1beta1" for v in g.get("versions") or []):
            return
    raise CLIError("Metrics API not available")


def _milli(q: str) -> int:
    from machinery.quantity import parse_quantity
    return math.ceil(parse_quantity(q) * 1000)


def _value(q: str) -> int:
    from machinery.quantity import parse_quantity
    return math.ceil(parse_quantity(q))


def _usage_cells(cpu_milli: int, mem_bytes: int, available: dict | None) -> list[str]:
    """A percentage follows a usage only where the node lists the resource, as kubectl."""
    available = available or {}
    cells = [f"{cpu_milli}m"]
    if "cpu" in available:
        cells.append(_percent(cpu_milli, available["cpu"]))
    cells.append(f"{mem_bytes // (1024 * 1024)}Mi")
    if "memory" in available:
        cells.append(_percent(mem_bytes * 1000, available["memory"]))
    return cells


def _percent(used_milli: int, available: str) -> str:
    total = _milli(available)
    return f"{int(used_milli / total * 100) if total else 0}%"


def _selector_check(args: Any, what: str) -> None:
    from machinery import fields, labels
    try:
        labels.parse(args.selector)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if what == "pods":
        try:
            fields.parse(args.field_selector)
        except ValueError as e:
            raise CLIError(str(e)) from None


def _top_pods(args: Any, s: Any) -> int:
    _validate(args)
    if args.name and (args.selector or args.field_selector):
        raise CLIError("only one of NAME or selector can be provided")
    _selector_check(args, "pods")
    _require_metrics_api(s)
    ns = s.namespace
    where = "" if args.all_namespaces else f"/namespaces/{ns}"
    if args.name:
        items = [s.client.request("GET", f"{API}/namespaces/{ns}/pods/{args.name}")]
    else:
        items = (s.client.request("GET", f"{API}{where}/pods", params={
            "labelSelector": args.selector or None, "fieldSelector": args.field_selector or None}) or {}).get(
            "items") or []
    if not items:
        _verify_empty(args, s, ns)
        print("No resources found" if args.all_namespaces else f"No resources found in {ns} namespace.",
              file=sys.stderr)
        return 0
    from machinery.quantity import parse_quantity
    rows = []
    for m in items:
        cs = m.get("containers") or []
        containers = [(c["name"], _milli(c["usage"].get("cpu", "0")), _value(c["usage"].get("memory", "0")))
                      for c in cs]
        # the pod's sum is exact before rounding, as Quantity.Add then MilliValue
        cpu = math.ceil(sum(parse_quantity(c["usage"].get("cpu", "0")) for c in cs) * 1000)
        mem = math.ceil(sum(parse_quantity(c["usage"].get("memory", "0")) for c in cs))
        rows.append((m["metadata"].get("namespace", ""), m["metadata"]["name"], cpu, mem, containers))
    key = {"cpu": lambda r: -r[2], "memory": lambda r: -r[3]}.get(
        args.sort_by, (lambda r: (r[0], r[1])) if args.all_namespaces else (lambda r: r[1]))
    rows.sort(key=key)
    lines = []
    if not args.no_headers:
        head = (["NAMESPACE"] if args.all_namespaces else []) + (["POD"] if args.containers else [])
        lines.append("\t".join(head + ["NAME", "CPU(cores)", "MEMORY(bytes)"]) + "\t")
    for namespace, name, cpu, mem, containers in rows:
        lead = [namespace] if args.all_namespaces else []
        if args.containers:
            ckey = {"cpu": lambda c: -c[1], "memory": lambda c: -c[2]}.get(args.sort_by, lambda c: c[0])
            for cname, ccpu, cmem in sorted(containers, key=ckey):
                lines.append("\t".join(lead + [name, cname] + _usage_cells(ccpu, cmem, None)) + "\t")
        else:
            lines.append("\t".join(lead + [name] + _usage_cells(cpu, mem, None)) + "\t")
    print_lines(tabwrite(lines))
    return 0


def _verify_empty(args: Any, s: Any, ns: str) -> None:
    """kubectl's verifyEmptyMetrics: why a list came back empty (it asks the context's
    namespace even with -A, as kubectl does)."""
    from machinery import times
    if args.name:
        pods = [s.client.request("GET", f"/api/v1/namespaces/{ns}/pods/{args.name}")]
    else:
        pods = (s.client.request("GET", f"/api/v1/namespaces/{ns}/pods", params={
            "labelSelector": args.selector or None, "fieldSelector": args.field_selector or None}) or {}).get(
            "items") or []
        if not pods:
            return
    from machinery.duration import go_string
    for pod in pods:
        md = pod["metadata"]
        age = time.time() - times.parse(md["creationTimestamp"])
        if age > METRICS_CREATION_DELAY:
            raise CLIError(f"Metrics not available for pod {md.get('namespace', ns)}/{md['name']}, "
                           f"age: {go_string(age)}")
    raise CLIError("metrics not available yet")


def _top_nodes(args: Any, s: Any) -> int:
    _validate(args)
    if args.name and args.selector:
        raise CLIError("only one of NAME or --selector can be provided")
    _selector_check(args, "nodes")
    _require_metrics_api(s)
    if args.name:
        items = [s.client.request("GET", f"{API}/nodes/{args.name}")]
    else:
        items = (s.client.request("GET", f"{API}/nodes", params={"labelSelector": args.selector or None})
                 or {}).get("items") or []
    if not items:
        raise CLIError("metrics not available yet")
    if args.name:
        nodes = [s.client.request("GET", f"/api/v1/nodes/{args.name}")]
    else:
        nodes = (s.client.request("GET", "/api/v1/nodes", params={"labelSelector": args.selector or None})
                 or {}).get("items") or []
    field = "capacity" if args.show_capacity else "allocatable"
    available = {n["metadata"]["name"]: (n.get("status") or {}).get(field) or {} for n in nodes}
    rows = [(m["metadata"]["name"], _milli(m["usage"].get("cpu", "0")), _value(m["usage"].get("memory", "0")))
            for m in items]
    key = {"cpu": lambda r: -r[1], "memory": lambda r: -r[2]}.get(args.sort_by, lambda r: r[0])
    rows.sort(key=key)
    lines = [] if args.no_headers else ["NAME\tCPU(cores)\tCPU(%)\tMEMORY(bytes)\tMEMORY(%)\t"]
    for name, cpu, mem in rows:
        lines.append("\t".join([name] + _usage_cells(cpu, mem, available.pop(name, None))) + "\t")
    for name in available:  # listed, but the metrics API has nothing for them
        lines.append(f"{name}\t" + "<unknown>\t" * 4)
    print_lines(tabwrite(lines))
    return 0
