"""One "slow and flaky API" run: the scheduler, the controller manager and a fake kubelet
talk to the API server through the fault proxy (tests/chaos/faultproxy.py) while it
answers 429 and 503 at random, delays answers and cuts connections and watch streams;
then the faults stop. `flaky_run()` is what tests/chaos/test_flaky_api.py asserts on;
`figures()` is what bench/chaos.py prints.

Guarantees
- Everything runs on its own etcd and API server (secure, the session PKI), so no other
  test's pods are scheduled or reconciled by these components; everything started is
  stopped by PID, and the proxy's thread is stopped, whatever happens.
- The faults run for `seconds` (default $MINIK8S_CHAOS_SECONDS, else 30): a Deployment of
  `replicas` pods is created when they start and scaled between `replicas` and
  `replicas + 2` every few seconds; when they stop it is scaled to `replicas + 2` and
  must converge (`recovery_seconds`: how long that took), then back to `replicas`.
- The figures say what happened, and do not judge it: requests seen per component,
  faults injected by kind, the highest request rate per component while faults ran
  (sliding one-second window), whether the Deployment converged after the faults
  stopped and how long that took, and whether every component was still running.
"""
from __future__ import annotations

import collections
import os
import tempfile
import time
import uuid
from typing import Any

from cluster import pki as cluster_pki
from tests.chaos.faultproxy import FaultProxy, Faults, rate_per_second
from tests.procs import APIServer, Component, Etcd, default_service_account, wait_for

SECONDS = float(os.environ.get("MINIK8S_CHAOS_SECONDS", "30"))
SEED = int(os.environ.get("MINIK8S_CHAOS_SEED", "19"))
# 20 % of requests refused (429 or 503), some cut or slowed, watches cut often.
FAULTS = Faults(p429=0.1, p503=0.1, p_cut=0.03, p_delay=0.1, delay=(0.05, 0.5),
                retry_after=1, watch_cut_after=15)
NODES = 3
SCALE_EVERY = 4.0  # seconds between scale changes while the faults run


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def _converged(http: Any, ns: str, name: str, replicas: int) -> bool:
    d = http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}").json()
    pods = [p for p in http.get(f"/api/v1/namespaces/{ns}/pods").json()["items"]
            if not p["metadata"].get("deletionTimestamp")]
    return (d.get("status", {}).get("availableReplicas") == replicas
            and d["status"].get("updatedReplicas") == replicas
            and d["status"].get("observedGeneration") == d["metadata"]["generation"]
            and len(pods) == replicas
            and all(p["spec"].get("nodeName") and p["status"].get("phase") == "Running" for p in pods))


def _scale(http: Any, ns: str, name: str, replicas: int) -> None:
    r = http.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
                   json={"spec": {"replicas": replicas}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text


def flaky_run(*, seconds: float = SECONDS, seed: int = SEED, replicas: int = 6,
              faults: Faults = FAULTS, converge_timeout: float = 60.0) -> dict[str, Any]:
    etcd = Etcd().start()
    api: APIServer | None = None
    components: dict[str, Component] = {}
    proxy: FaultProxy | None = None
    tmp = tempfile.mkdtemp(prefix="minik8s-flaky-")
    try:
        api = APIServer(etcd.url).start()
        assert api.pki_dir is not None
        proxy = FaultProxy(api.url, api.pki_dir, seed=seed)
        kubeconfigs = {}
        for name, user in (("scheduler", "scheduler"), ("controller-manager", "controller-manager"),
                           ("kubelet", "admin")):
            path = os.path.join(tmp, f"{name}.conf")
            cluster_pki.write_kubeconfig(path, api.pki_dir, user, cluster_name="flaky",
                                         server=proxy.listen(name, user))
            kubeconfigs[name] = path
        ns, name = "flaky-" + uuid.uuid4().hex[:6], "web"
        with api.client() as http:
            assert http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": ns}}).status_code == 201
            default_service_account(http, ns)
            proxy.set_faults(faults)
            started = time.monotonic()
            components = {
                "scheduler": Component("scheduler", "--kubeconfig", kubeconfigs["scheduler"],
                                       "--leader-elect=false", "--secure-port", "0").start(),
                "controller-manager": Component(
                    "controller-manager", "--kubeconfig", kubeconfigs["controller-manager"],
                    "--leader-elect=false", "--controllers", "deployment,replicaset",
                    "--secure-port", "0").start(),
                "kubelet": Component("kubelet", "--kubeconfig", kubeconfigs["kubelet"], "--runtime", "fake",
                                     "--nodes", str(NODES), "--node-name", ns, "--healthz-port", "0",
                                     "--lease-renew-interval", "2",
                                     "--node-status-update-frequency", "2").start(),
            }
            r = http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json=_deployment(name, replicas))
            assert r.status_code == 201, r.text
            scales = 0
            # The scenario's length, not a wait for a condition: the faults run this long,
            # and the Deployment is scaled up and down every few seconds meanwhile.
            while (now := time.monotonic()) < started + seconds:
                if now > started + (scales + 1) * SCALE_EVERY:
                    scales += 1
                    _scale(http, ns, name, replicas + 2 * (scales % 2))
                if not all(c.alive() for c in components.values()):
                    break
                time.sleep(0.2)
            proxy.set_faults(Faults())
            faults_off = time.monotonic()
            _scale(http, ns, name, replicas + 2)
            alive_after_faults = {k: c.alive() for k, c in components.items()}
            converged = True
            try:
                wait_for(lambda: _converged(http, ns, name, replicas + 2), timeout=converge_timeout,
                         interval=0.1, what="the Deployment to converge after the faults")
            except TimeoutError:
                converged = False
            recovered_at = time.monotonic()
            # Each component still reacts, now that the faults are over: a new scale is
            # carried out (controller manager, scheduler and kubelet all take part).
            rescaled = False
            if converged:
                _scale(http, ns, name, replicas)
                try:
                    wait_for(lambda: _converged(http, ns, name, replicas), timeout=converge_timeout,
                             interval=0.1, what="the Deployment to scale down after the faults")
                    rescaled = True
                except TimeoutError:
                    pass
        records = proxy.records()
        during = [r for r in records if started <= r.at < faults_off]
        by_component = collections.Counter(r.listener for r in records)
        faults_by_kind = collections.Counter(r.fault for r in records if r.fault)
        return {
            "seconds": seconds, "seed": seed, "faults": faults,
            "requests": dict(by_component),
            "faults_injected": dict(faults_by_kind),
            "max_request_rate": {c: rate_per_second([r for r in during if r.listener == c])
                                 for c in components},
            "mean_request_rate": {c: sum(1 for r in during if r.listener == c) / max(faults_off - started, 1e-9)
                                  for c in components},
            "converged": converged, "rescaled": rescaled,
            "recovery_seconds": round(recovered_at - faults_off, 2) if converged else None,
            "alive_after_faults": alive_after_faults, "faults_off": faults_off,
            "alive_at_end": {k: c.alive() for k, c in components.items()},
            "records": records,
            "logs": {k: c.log() for k, c in components.items()},
        }
    finally:
        for c in components.values():
            c.stop()
        if proxy is not None:
            proxy.close()
        if api is not None:
            api.stop()
        etcd.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def figures(**kw: Any) -> dict[str, object]:
    """For bench/chaos.py: one run's figures, without the raw records and logs."""
    run = flaky_run(**kw)
    return {k: v for k, v in run.items() if k not in ("records", "logs", "faults", "faults_off")}
