"""RBAC decision benchmark: the authorizer (apiserver/auth/rbac.py) deciding requests with
1,000 RoleBindings and 100 ClusterRoleBindings in its index, the bootstrap policy loaded.

In process, no server: what a request would pay for authorization. Each measured
decision is one of a rotating set of requests: allowed by a RoleBinding of the user,
allowed by a ClusterRoleBinding of one of the user's groups, allowed by a ServiceAccount
subject, and refused (which visits every binding of the user and its groups). Prints the
p50 and p99 of single decisions (time.perf_counter_ns around each call) and the mean of
a tight loop. Target: p99 < 20 us.

Run: .venv/bin/python -m bench.rbac [--decisions N]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from apiserver.auth.authorizer import Attributes, UserInfo, service_account_user  # noqa: E402
from apiserver.auth.bootstrappolicy import cluster_role_bindings, cluster_roles  # noqa: E402
from apiserver.auth.rbac import RBACAuthorizer  # noqa: E402

G = "rbac.authorization.k8s.io"


def aggregated(roles: list[dict]) -> list[dict]:
    """The bootstrap roles with admin, edit and view filled as the clusterrole-aggregation
    controller fills them (labels matched by equality: the bootstrap selectors are)."""
    by_name = {r["metadata"]["name"]: r for r in roles}

    def gather(role: dict) -> list[dict]:
        out: list[dict] = []
        for sel in role["aggregationRule"]["clusterRoleSelectors"]:
            for other in sorted(by_name.values(), key=lambda r: r["metadata"]["name"]):
                if other is role or not sel["matchLabels"].items() <= other["metadata"]["labels"].items():
                    continue
                rules = gather(other) if "aggregationRule" in other else other.get("rules", [])
                out += [r for r in rules if r not in out]
        return out
    return [{**r, "rules": gather(r)} if "aggregationRule" in r else r for r in roles]


def policy(role_bindings: int, cluster_bindings: int) -> RBACAuthorizer:
    a = RBACAuthorizer()
    for r in aggregated(cluster_roles()):
        a.index.put("clusterroles", r)
    for b in cluster_role_bindings():
        a.index.put("clusterrolebindings", b)
    for ns in range(50):
        a.index.put("roles", {"metadata": {"name": "app", "namespace": f"ns-{ns}"}, "rules": [
            {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["configmaps", "pods"]},
            {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["app-token"]},
            {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"]}]})
    for i in range(role_bindings):
        ns = f"ns-{i % 50}"
        subjects = [{"kind": "User", "apiGroup": G, "name": f"user-{i}"},
                    {"kind": "ServiceAccount", "name": f"sa-{i}"}]
        role = ("Role", "app") if i % 2 else ("ClusterRole", "view")
        a.index.put("rolebindings", {"metadata": {"name": f"rb-{i}", "namespace": ns},
                                     "roleRef": {"apiGroup": G, "kind": role[0], "name": role[1]},
                                     "subjects": subjects})
    for i in range(cluster_bindings):
        a.index.put("clusterrolebindings", {
            "metadata": {"name": f"crb-{i}"},
            "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": "system:node-proxier"},
            "subjects": [{"kind": "Group", "apiGroup": G, "name": f"group-{i}"}]})
    return a


def requests() -> list[Attributes]:
    jane = UserInfo("user-7", ("group-3", "system:authenticated"))
    return [
        Attributes(jane, "get", "ns-7", "", "v1", "pods", name="web"),            # RoleBinding, Role
        Attributes(jane, "patch", "ns-7", "apps", "v1", "deployments", "scale", "web"),
        Attributes(jane, "list", "", "discovery.k8s.io", "v1", "endpointslices"),  # group's CRB
        Attributes(service_account_user("ns-8", "sa-8"), "list", "ns-8", "", "v1", "services"),  # SA, view
        Attributes(jane, "delete", "ns-7", "", "v1", "secrets", name="x"),        # refused
        Attributes(jane, "get", "", "", "", resource_request=False, path="/version"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--role-bindings", type=int, default=1000)
    ap.add_argument("--cluster-role-bindings", type=int, default=100)
    args = ap.parse_args()
    a = policy(args.role_bindings, args.cluster_role_bindings)
    reqs = requests()
    print(f"index: {len(a.index.bindings)} bindings ({args.role_bindings} RoleBindings, "
          f"{args.cluster_role_bindings} ClusterRoleBindings + the bootstrap policy's), "
          f"{len(a.index.cluster_roles)} ClusterRoles, {len(a.index.roles)} Roles")
    for r in reqs:
        print(f"  {r.verb} {r.resource or r.path}{'/' + r.subresource if r.subresource else ''}"
              f" by {r.user.name}: {a.authorize(r)[0].name}")
    authorize, n, k = a.authorize, args.decisions, len(reqs)
    for i in range(20_000):  # warm up
        authorize(reqs[i % k])
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            r = reqs[i % k]
            t0 = clock()
            authorize(r)
            samples.append(clock() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            authorize(reqs[i % k])
        loop = (time.perf_counter() - t0) / n
    finally:
        gc.enable()
    samples.sort()
    p50, p99 = samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
    print(f"decision: p50 {p50:.1f} us, p99 {p99:.1f} us (target p99 < 20 us: "
          f"{'met' if p99 < 20 else 'NOT met'}); mean in a loop {loop * 1e6:.2f} us; "
          f"max {samples[-1] / 1000:.0f} us; stdev {statistics.pstdev(samples) / 1000:.1f} us")
    print(f"bindings examined per decision: {a.visited / (2 * n + 20_000 + k):.2f} "
          f"(of {len(a.index.bindings)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
