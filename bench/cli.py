"""CLI start-up benchmark: kubectl-lite against the real kubectl, side by side.

Starts an etcd and an API server, creates 100 pods, then times whole invocations
(process start to exit, output to /dev/null) of
  (a) `version --client`            (no server involved: pure start-up cost)
  (b) `get pods` on 100 pods        (kubeconfig, one Table request, printing)
  (c) `get pods -o yaml` on 100 pods
for `kubectl-lite` and for `/usr/bin/kubectl` (when present), and prints min / median
wall time of N runs and the ratio. kubectl gets a warm discovery cache (one run
before timing); each kubectl-lite run is a fresh Python process.

Note: /usr/bin/kubectl on these machines is the Google Cloud SDK dispatcher, which
first asks the server's /version and then runs kubectl 1.<minor>; that round trip is
part of what a user waits for, so it is part of the figure.

Run: .venv/bin/python -m bench.cli [--runs N] [--pods N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.procs import APIServer, Etcd  # noqa: E402


def timed(cmd: list[str], runs: int, env: dict) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode()}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--pods", type=int, default=100)
    args = ap.parse_args()
    lite = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")
    if not os.path.exists(lite):
        raise SystemExit(f"{lite} not found: pip install -e . first")
    kubectl = shutil.which("kubectl")
    etcd = Etcd().start()
    server = APIServer(etcd.url, plain=True).start()
    tmp = tempfile.mkdtemp(prefix="bench-cli-")
    try:
        kubeconfig = os.path.join(tmp, "config")
        with open(kubeconfig, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "bench",
                       "clusters": [{"name": "c", "cluster": {"server": server.url}}],
                       "users": [{"name": "u", "user": {}}],
                       "contexts": [{"name": "bench", "context": {"cluster": "c", "user": "u",
                                                                  "namespace": "default"}}]}, f)
        with httpx.Client(base_url=server.url) as http:
            for i in range(args.pods):
                r = http.post("/api/v1/namespaces/default/pods", json={
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"pod-{i:03d}", "labels": {"app": "bench", "i": str(i)}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
                assert r.status_code == 201, r.text
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        tools = [("kubectl-lite", [lite, "--kubeconfig", kubeconfig])]
        if kubectl:
            tools.append(("kubectl", [kubectl, "--kubeconfig", kubeconfig, "--cache-dir",
                                      os.path.join(tmp, "cache")]))
            subprocess.run(tools[1][1] + ["get", "pods"], capture_output=True, env=env)  # warm cache
        cases = [("version --client", ["version", "--client"]),
                 (f"get pods ({args.pods} pods)", ["get", "pods"]),
                 (f"get pods -o yaml ({args.pods} pods)", ["get", "pods", "-o", "yaml"])]
        print(f"CLI wall time, {args.runs} runs each (min / median seconds), {os.cpu_count()} CPUs")
        print(f"{'command':<30} " + "  ".join(f"{name:>22}" for name, _ in tools) +
              ("  ratio (median)" if len(tools) > 1 else ""))
        for label, argv in cases:
            cells, medians = [], []
            for _, base in tools:
                times = timed(base + argv, args.runs, env)
                medians.append(statistics.median(times))
                cells.append(f"{min(times):.3f} / {statistics.median(times):.3f}")
            ratio = f"  {medians[0] / medians[1]:.2f}x" if len(medians) > 1 else ""
            print(f"{label:<30} " + "  ".join(f"{c:>22}" for c in cells) + ratio)
    finally:
        server.stop()
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
