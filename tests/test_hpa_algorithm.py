"""The HPA's recommendation against Kubernetes' own documentation of its algorithm.

Every case cites the passage of https://kubernetes.io/docs/tasks/run-application/
horizontal-pod-autoscale/ ("Algorithm details", "Configurable scaling behavior",
"Default Behavior", the "Example:" sections) it comes from; the figures are the
documentation's where it gives them. The functions under test are the controller's own
(controller_manager.controllers.hpa_replicas), fed pods and samples as the API would
hold them, with time passed in.
"""
from __future__ import annotations

import pytest

from apiserver.strategies.autoscaling import default_hpa
from controller_manager.controllers import hpa_replicas as calc
from machinery import times

NOW = 1_700_000_000.0
DOC = "https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/"


def pod(name: str, *, cpu: str = "100m", phase: str = "Running", ready: str = "True",
        started: float = NOW - 3600, ready_since: float | None = None, deleting: bool = False) -> dict:
    md: dict = {"name": name, "namespace": "default"}
    if deleting:
        md["deletionTimestamp"] = times.rfc3339(NOW)
    status: dict = {"phase": phase, "startTime": times.rfc3339(started), "conditions": [
        {"type": "Ready", "status": ready,
         "lastTransitionTime": times.rfc3339(ready_since if ready_since is not None else started + 5)}]}
    return {"metadata": md, "status": status,
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]}}


def samples(**milli: int) -> dict[str, calc.PodMetric]:
    return {name: calc.PodMetric(v, NOW - 5, 30.0) for name, v in milli.items()}


def utilization(current: int, target: int, pods: list[dict], metrics: dict) -> int:
    return calc.resource_replicas(current, target, "cpu", pods, metrics, now=NOW)[0]


# --- "Algorithm details": desiredReplicas = ceil[currentReplicas * (current / desired)] ---

@pytest.mark.parametrize("usage, want", [
    # DOC "Algorithm details": "if the current metric value is 200m, and the desired value
    # is 100m, the number of replicas will be doubled".
    (200, 4),
    # DOC: "If the current value is instead 50m, you'll halve the number of replicas".
    (50, 1),
    # DOC: "The control plane skips any scaling action if the ratio is sufficiently close
    # to 1.0 (within a globally-configurable tolerance, 0.1 by default)": 110m / 100m.
    (109, 2),
    (91, 2),
    # ... and outside it, it acts: 1.11 -> ceil(2.22) = 3.
    (111, 3),
])
def test_the_ratio_of_current_to_desired_value_scales_the_replicas(usage, want):
    pods = [pod("a"), pod("b")]
    replicas, avg = calc.raw_replicas(2, 100, "cpu", pods, samples(a=usage, b=usage), now=NOW)
    assert (replicas, avg) == (want, usage)


def test_utilization_is_the_average_usage_over_the_requests():
    # DOC "Support for resource metrics": "Utilization is the ratio between the current usage
    # of resource to the requested resources of the pod", averaged across the target's pods
    # ("Algorithm details"). 3 pods of 500m requests using 500m, 400m, 300m: 80% against 50%.
    pods = [pod(n, cpu="500m") for n in "abc"]
    replicas, util, raw = calc.resource_replicas(3, 50, "cpu", pods, samples(a=500, b=400, c=300), now=NOW)
    assert (util, raw) == (80, 400)
    assert replicas == 5  # ceil(3 * 80 / 50) = ceil(4.8)


def test_a_pod_without_a_request_makes_utilization_fail():
    # DOC "Support for resource metrics": "the resource requests like cpu and memory should be
    # specified. This is used to determine the resource utilization".
    pods = [pod("a"), {**pod("b"), "spec": {"containers": [{"name": "app"}]}}]
    with pytest.raises(calc.MetricError, match="missing request for cpu in container app of Pod b"):
        calc.resource_replicas(2, 50, "cpu", pods, samples(a=100, b=100), now=NOW)


def test_deleted_and_failed_pods_are_ignored():
    # DOC "Algorithm details": "All Pods with a deletion timestamp set ... are ignored, and all
    # failed Pods are discarded." Only a's 200m of 100m counts: ceil(1 * 2) = 2.
    pods = [pod("a"), pod("b", deleting=True), pod("c", phase="Failed")]
    assert utilization(3, 100, pods, samples(a=200, b=0, c=0)) == 2


# --- missing metrics: 100% of the desired value on a scale down, 0% on a scale up ---

def test_missing_metrics_count_as_full_use_when_scaling_down():
    # DOC "Algorithm details": "If there were any missing metrics, the control plane
    # recomputes the average more conservatively, assuming those pods were consuming 100% of
    # the desired value in case of a scale down" (for Utilization, the controller's
    # replica_calculator.go counts them at 100% of their request). 4 pods of 100m, target
    # 80%: a, b, c report 10%, d nothing. Without d: 10/80 -> ceil(0.125 * 3) = 1; with d at
    # 100%: (10+10+10+100)/400 = 32% -> ceil(0.4 * 4) = 2.
    pods = [pod(n) for n in "abcd"]
    assert utilization(4, 80, pods, samples(a=10, b=10, c=10)) == 2
    # For an AverageValue target they count at the target: (10+10+10+80)/4 = 27.5 -> 2.
    assert calc.raw_replicas(4, 80, "cpu", pods, samples(a=10, b=10, c=10), now=NOW)[0] == 2


def test_missing_metrics_count_as_zero_when_scaling_up():
    # DOC: "... and 0% in case of a scale up." a and b use 100% of a 50% target; c and d
    # report nothing: (100+100+0+0)/4 = 50% -> within tolerance, so no change ("If the new
    # ratio reverses the scale direction, or is within the tolerance, the controller
    # doesn't take any scaling action").
    pods = [pod(n) for n in "abcd"]
    assert utilization(4, 50, pods, samples(a=100, b=100)) == 4
    # With a and b at 200%: (200+200)/4 = 100% of request, ratio 2 -> 8.
    assert utilization(4, 50, pods, samples(a=200, b=200)) == 8


def test_missing_metrics_never_reverse_the_direction():
    # DOC: "If the new ratio reverses the scale direction ... the controller doesn't take any
    # scaling action." Target 100 (AverageValue): a reports 80 (a scale down), b missing
    # counts as 100: (80+100)/2 = 90 -> within tolerance of 1.0... and at target 50, a
    # reports 40 (down), b missing at 50: 45/50 = 0.9 -> within the tolerance too.
    pods = [pod("a"), pod("b")]
    assert calc.raw_replicas(2, 100, "cpu", pods, samples(a=80), now=NOW)[0] == 2
    assert calc.raw_replicas(2, 50, "cpu", pods, samples(a=40), now=NOW)[0] == 2


# --- readiness: not-yet-ready pods are set aside on CPU, and count as 0% when scaling up ---

def test_not_yet_ready_pods_count_as_zero_on_a_scale_up():
    # DOC "Algorithm details": "When scaling on CPU, if any pod has yet to become ready ...
    # that pod is set aside"; "if any not-yet-ready pods were present, and the workload would
    # have scaled up without factoring in missing metrics or not-yet-ready pods, the
    # controller conservatively assumes that the not-yet-ready pods are consuming 0%".
    # a ready at 300% of its request, target 100%; c started 10 s ago and is unready, with a
    # sample of 900%: set aside, then 0%: (300 + 0)/2 = 150% -> ceil(1.5 * 2) = 3 (counting
    # c's sample would say 12).
    pods = [pod("a"), pod("c", ready="False", started=NOW - 10, ready_since=NOW - 10)]
    assert utilization(2, 100, pods, samples(a=300, c=900)) == 3


def test_a_sample_from_before_the_pod_turned_ready_is_set_aside():
    # DOC: "or the most recent metric point for the pod was before it became ready, that pod
    # is set aside as well" (within --horizontal-pod-autoscaler-cpu-initialization-period,
    # 5 minutes). b started 60 s ago and turned ready 2 s ago; its sample (5 s old, a 30 s
    # window) predates that: set aside, and 0% on the scale up a's 120% asks for:
    # (120 + 0)/2 = 60% reverses the direction, so nothing changes.
    pods = [pod("a"), pod("b", started=NOW - 60, ready_since=NOW - 2)]
    assert utilization(2, 100, pods, samples(a=120, b=900)) == 2
    # Once a window has passed since it turned ready, its sample counts: (120+900)/2 -> 11.
    pods = [pod("a"), pod("b", started=NOW - 60, ready_since=NOW - 60)]
    assert utilization(2, 100, pods, samples(a=120, b=900)) == 11


def test_after_the_initialization_period_an_unready_pod_counts_unless_it_never_became_ready():
    # DOC: a pod is "not yet ready" if "it's unready and transitioned to unready within a
    # short, configurable window of time since it started" (--horizontal-pod-autoscaler-
    # initial-readiness-delay, 30 s). An hour-old pod that went unready 10 min after start was
    # ready once: its sample counts (ceil((200 + 200)/100) = 4). One unready since 5 s after
    # start never was: set aside, and 0% on the scale up: (200 + 0)/2 -> 2 (no change).
    counted = [pod("a"), pod("b", ready="False", ready_since=NOW - 3000)]
    assert utilization(2, 100, counted, samples(a=200, b=200)) == 4
    never = [pod("a"), pod("b", ready="False", ready_since=NOW - 3595)]
    assert utilization(2, 100, never, samples(a=200, b=200)) == 2


def test_pending_pods_count_as_zero_on_a_scale_up():
    # DOC: a pod that "has yet to become ready (it's still initializing ...)" is set aside and
    # counts 0% on a scale up: a at 400%, b Pending: (400 + 0)/2 = 200% -> ceil(2 * 2) = 4,
    # where a alone would say ceil(4 * 1) = 4 too; at 150%, a alone says 2, with b 0% -> 75%,
    # a reversal: no change.
    pods = [pod("a"), pod("b", phase="Pending")]
    assert utilization(2, 100, pods, samples(a=400)) == 4
    assert utilization(2, 100, pods, samples(a=150)) == 2


# --- stabilization and policies ---

def history_at(*recs: tuple[int, float]) -> calc.History:
    return calc.History(recommendations=list(recs))


def test_scale_down_takes_the_highest_recommendation_of_the_last_5_minutes():
    # DOC "Algorithm details": "The controller considers all recommendations within a
    # configurable window choosing the highest recommendation from within that window ...
    # --horizontal-pod-autoscaler-downscale-stabilization ... defaults to 5 minutes."
    h = history_at((10, NOW - 290), (6, NOW - 100))
    n = calc.normalize(h, current=10, desired=3, min_replicas=1, max_replicas=20, now=NOW)
    assert (n.replicas, n.able_reason) == (10, "ScaleDownStabilized")
    # Once the 10 is older than 5 minutes, the highest left is 6.
    n = calc.normalize(h, current=10, desired=3, min_replicas=1, max_replicas=20, now=NOW + 20)
    assert n.replicas == 6


def test_default_behavior_scale_down_window_is_300_seconds():
    # DOC "Default Behavior": scaleDown stabilizationWindowSeconds 300 ("or the value of the
    # --horizontal-pod-autoscaler-downscale-stabilization flag"), Percent 100 per 15 s.
    hpa = {"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 10, "behavior": {}}}
    default_hpa(hpa)
    behavior = hpa["spec"]["behavior"]
    h = history_at((8, NOW - 299))
    n = calc.normalize_with_behavior(h, behavior, current=8, desired=2, min_replicas=1, max_replicas=10, now=NOW)
    assert n.replicas == 8
    n = calc.normalize_with_behavior(h, behavior, current=8, desired=2, min_replicas=1, max_replicas=10,
                                     now=NOW + 2)
    # 8 -> 2 at once: "100% of the currently running replicas to be removed".
    assert (n.replicas, n.limited) == (2, False)


def test_default_behavior_scales_up_by_4_pods_or_100_percent_per_15_seconds():
    # DOC "Default Behavior": "4 pods or a 100% of the currently running replicas will be
    # added every 15 seconds". From 1: max(1+4, 2) = 5; from 10: max(14, 20) = 20.
    hpa = {"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 100, "behavior": {}}}
    default_hpa(hpa)
    behavior = hpa["spec"]["behavior"]
    h = calc.History()
    n = calc.normalize_with_behavior(h, behavior, current=1, desired=50, min_replicas=1, max_replicas=100, now=NOW)
    assert (n.replicas, n.limited_reason) == (5, "ScaleUpLimit")
    calc.record_scale_event(h, behavior, 1, 5, NOW)
    # Within the same 15 s, the 4 pods already added count against the period.
    n = calc.normalize_with_behavior(h, behavior, current=5, desired=50, min_replicas=1, max_replicas=100,
                                     now=NOW + 5)
    assert n.replicas == 5
    n = calc.normalize_with_behavior(h, behavior, current=10, desired=50, min_replicas=1, max_replicas=100,
                                     now=NOW + 60)
    assert n.replicas == 20


def test_scale_down_policies_select_the_largest_change_by_default():
    # DOC "Scaling policies": Pods 4/60 s and Percent 10/60 s; "if there are 80 replicas and
    # the target has to be scaled down to 10 replicas then during the first step 8 replicas
    # will be reduced. In the next iteration when the number of replicas is 72, 10% of the
    # pods is 7.2 but the number is rounded up to 8 ... When the number of replicas falls
    # below 40 the first policy (Pods) is applied and 4 replicas will be reduced at a time."
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 10, "periodSeconds": 60}]},
        "scaleUp": {"stabilizationWindowSeconds": 0, "policies": []}}
    h, current, t, sizes = calc.History(), 80, NOW, [80]
    while current > 10:
        n = calc.normalize_with_behavior(h, behavior, current=current, desired=10, min_replicas=1,
                                         max_replicas=100, now=t)
        calc.record_scale_event(h, behavior, current, n.replicas, t)
        current, t = n.replicas, t + 61  # "on each loop" after the minute has passed
        sizes.append(current)
    # 80 -8-> 72 -8-> 64 (int(72 * 0.9)), then 10% while above 40, then 4 at a time.
    assert sizes == [80, 72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]


def test_limit_scale_down_to_10_percent_or_5_pods_per_minute_with_select_min():
    # DOC "Example: limit scale down rate": Percent 10/60 s and Pods 5/60 s with selectPolicy
    # Min: "the autoscaler chooses the policy that affects the smallest number of Pods".
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min", "policies": [
        {"type": "Percent", "value": 10, "periodSeconds": 60}, {"type": "Pods", "value": 5, "periodSeconds": 60}]},
        "scaleUp": {"stabilizationWindowSeconds": 0, "policies": []}}
    for current, want in ((100, 95), (30, 27)):  # min(5 pods, 10 pods) ; min(5, 3 pods)
        n = calc.normalize_with_behavior(calc.History(), behavior, current=current, desired=1, min_replicas=1,
                                         max_replicas=200, now=NOW)
        assert (n.replicas, n.limited_reason) == (want, "ScaleDownLimit")
    # Within the minute, a second step removes nothing more.
    h = calc.History()
    calc.record_scale_event(h, behavior, 100, 95, NOW)
    n = calc.normalize_with_behavior(h, behavior, current=95, desired=1, min_replicas=1, max_replicas=200,
                                     now=NOW + 30)
    assert n.replicas == 95


def test_select_policy_disabled_turns_off_scaling_down():
    # DOC "Example: disable scale down": selectPolicy Disabled.
    hpa = {"apiVersion": "autoscaling/v2",
           "spec": {"maxReplicas": 10, "behavior": {"scaleDown": {"selectPolicy": "Disabled"}}}}
    default_hpa(hpa)
    n = calc.normalize_with_behavior(calc.History(), hpa["spec"]["behavior"], current=6, desired=2,
                                     min_replicas=1, max_replicas=10, now=NOW, downscale_stabilization=0)
    assert n.replicas == 6


def test_a_custom_downscale_stabilization_window_of_one_minute():
    # DOC "Example: change downscale stabilization window": scaleDown stabilizationWindowSeconds 60.
    hpa = {"apiVersion": "autoscaling/v2",
           "spec": {"maxReplicas": 10, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    default_hpa(hpa)
    behavior = hpa["spec"]["behavior"]
    h = history_at((9, NOW - 59))
    assert calc.normalize_with_behavior(h, behavior, current=9, desired=3, min_replicas=1, max_replicas=10,
                                        now=NOW).replicas == 9
    assert calc.normalize_with_behavior(h, behavior, current=9, desired=3, min_replicas=1, max_replicas=10,
                                        now=NOW + 2).replicas == 3


@pytest.mark.parametrize("desired, want, reason", [
    (40, 10, "TooManyReplicas"),  # never past maxReplicas
    (0, 2, "TooFewReplicas"),  # never below minReplicas, never to zero
    (7, 7, "DesiredWithinRange"),
])
def test_the_recommendation_is_kept_between_min_and_max(desired, want, reason):
    # DOC "How does a HorizontalPodAutoscaler work": the HPA scales between minReplicas and
    # maxReplicas ("provided that this isn't larger than the overall maximum that you
    # configured", "Scaling on multiple metrics").
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 900, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    n = calc.normalize_with_behavior(calc.History(), behavior, current=5, desired=desired, min_replicas=2,
                                     max_replicas=10, now=NOW)
    assert (n.replicas, n.limited_reason) == (want, reason)
    n = calc.normalize(calc.History(), current=5, desired=desired, min_replicas=2, max_replicas=10, now=NOW)
    assert n.replicas == want


def test_kubernetes_defaults_fill_only_what_is_unset():
    # DOC "Default Behavior": "Only values which need to be customized can be specified.
    # These custom values are merged with default values."
    hpa = {"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 3, "behavior": {
        "scaleUp": {"selectPolicy": "Min"}}}}
    default_hpa(hpa)
    spec = hpa["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert spec["behavior"]["scaleUp"] == {"selectPolicy": "Min", "stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert spec["behavior"]["scaleDown"] == {"selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def test_a_scale_up_window_takes_the_lowest_recent_recommendation():
    # DOC "Stabilization window": "The stabilization window is used to restrict the flapping
    # of replicas count when the metrics used for scaling keep fluctuating" (the API's
    # stabilizationWindowSeconds, "for which past recommendations should be considered while
    # scaling up or scaling down"). With a 60 s scale-up window, a spike to 8 right after a
    # recommendation of 5 scales 4 only to 5; once the 5 is a minute old, to 8.
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 900, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    h = history_at((5, NOW - 30))
    n = calc.normalize_with_behavior(h, behavior, current=4, desired=8, min_replicas=1, max_replicas=10, now=NOW)
    assert (n.replicas, n.able_reason) == (5, "ScaleUpStabilized")
    n = calc.normalize_with_behavior(h, behavior, current=5, desired=8, min_replicas=1, max_replicas=10,
                                     now=NOW + 31)
    assert (n.replicas, n.able_reason) == (8, "ReadyForNewScale")
    # Falling back while a higher recommendation is in the 300 s window: held at the current count.
    n = calc.normalize_with_behavior(h, behavior, current=8, desired=3, min_replicas=1, max_replicas=10,
                                     now=NOW + 40)
    assert (n.replicas, n.able_reason) == (8, "ScaleDownStabilized")
