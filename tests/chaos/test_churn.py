"""Churn with a component killed at random (issue 19), on a real `minik8s up` cluster.

One scenario (tests/chaos/churn_run.py): 2 nodes, pods created and deleted, 5
Deployments scaled and rolled, and every 10 s a kill -9 of the scheduler, the
controller manager, the API server, a kubelet or a kubelet's fork server, chosen by a
seeded RNG. The cluster converges to its desired state after each kill (the churn waits
meanwhile; one time per kill, printed) and once the killing stops (within 60 s, the
issue's bound, as a poll timeout; the time taken is printed), no pod was bound twice and no
Deployment had more than replicas + maxSurge live pods (a watch throughout), and
nothing of a deleted pod is left on any node.

Takes 1.5 to 3 minutes on CI's 2 cores (78 to 171 s here): 10 to 60 s bring-up,
60 s of churn and kills with ~150 pods, convergence (under 1 to 30 s) and teardown. The issue's full run (500 pods over
3 minutes): MINIK8S_CHAOS_SECONDS=180 MINIK8S_CHAOS_PODS=500; MINIK8S_CHAOS_SEED picks
the kills, MINIK8S_CHAOS_NODES the node count (2 or 3).
"""
import importlib.util
import os

import pytest

from tests.chaos import churn_run

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(importlib.util.find_spec("kubelet.main") is None, reason="no kubelet"),
]


@pytest.mark.timeout(900)
def test_churn_with_a_component_killed_every_10s_converges_and_leaves_nothing():
    fig = churn_run.run(log=print)
    print({k: v for k, v in fig.items() if k != "leftover_items"})
    assert sum(n for kind, n in fig["kills"].items() if kind != "missed") >= 3, fig["kills"]
    assert fig["violations"] == [], fig["violations"]
    assert fig["convergence_seconds"] is not None, f"not converged: {fig['not_converged']}"
    # one convergence sample per kill that hit something (figures: p50, p99 in bench/chaos.py)
    hits = sum(n for kind, n in fig["kills"].items() if kind != "missed")
    assert fig["convergence_after_kills"]["n"] == hits, fig["convergence_after_kills"]
    assert fig["kills_not_converged"] == [], fig["kills_not_converged"]
    assert fig["leftover_items"] == {n: [] for n in fig["leftover_items"]}, fig["leftover_items"]
    # paced to the budget, but each request waits for its answer: under load fewer
    assert set(fig["ops"]) == {"create", "delete", "scale", "rollout"}, fig["ops"]
