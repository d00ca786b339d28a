"""The horizontal pod autoscaler (pkg/controller/podautoscaler/horizontal.go): every
sync period, each HorizontalPodAutoscaler's target is scaled to what its metrics ask.

What it guarantees, as Kubernetes' controller does:
- The target is found from `scaleTargetRef` (apiVersion + kind) through the kinds the
  client knows, then the server's discovery (so custom resources work), and read and
  written only through its `/scale` subresource; its pods are those matching the
  Scale's `status.selector`.
- Resource metrics (Resource and ContainerResource, Utilization or AverageValue) come
  from `metrics.k8s.io/v1beta1` PodMetrics through the API server (the aggregation
  layer), as the REST metrics client reads them. A sample older than twice its window
  (the next scrape is overdue) counts as missing. The arithmetic is
  controller_manager.controllers.hpa_replicas: tolerance, missing and unready pods,
  behavior, stabilization, min/max.
- A target at 0 replicas is left alone (ScalingActive False, ScalingDisabled); a target
  above maxReplicas or below minReplicas is brought inside at once. The HPA never
  scales to zero (minReplicas >= 1) nor past maxReplicas.
- Conditions AbleToScale, ScalingActive and ScalingLimited, events (SuccessfulRescale,
  FailedGetScale, FailedGetResourceMetric, FailedComputeMetricsReplicas,
  SelectorRequired, InvalidSelector, FailedRescale) and status (currentReplicas,
  desiredReplicas, currentMetrics, lastScaleTime) with Kubernetes' reasons and
  messages. The status is written only when it changed.
- Pods, Object and External metrics need a custom or external metrics API, which is not
  served here: such a metric fails with FailedGetPodsMetric (or Object, External) and
  the others still count.

Timing: an HPA is synced when it is created or its spec changes, then every
--horizontal-pod-autoscaler-sync-period (15 s). Time is the injected clock's, so tests
move it: `now()` (wall) is what samples, pod start and readiness times are compared
with; `monotonic()` times the stabilization windows and policy periods. The
recommendation and scale-event history is kept in memory per HPA, as Kubernetes keeps
it; a restart forgets it. One asyncio loop; the work queue serializes each HPA.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from client.clock import Clock
from client.events import EventRecorder
from client.informer import key_of
from client.rest import Resource
from controller_manager.controller import Controller
from controller_manager.controllers import hpa_replicas as calc
from machinery import errors, labels, quantity, times
from machinery.duration import parse_duration

log = logging.getLogger("minik8s.controller.horizontalpodautoscaler")

NORMAL, WARNING = "Normal", "Warning"
DEFAULT_CPU_UTILIZATION = 80
_METRICS_PATH = "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"


class MetricsClient(Protocol):
    async def pod_metrics(self, namespace: str, selector: str) -> list[dict]:
        """The PodMetrics of the pods `selector` matches in `namespace`; raises on failure."""
        ...


class RESTMetricsClient:
    """metrics.k8s.io/v1beta1 through the API server, as Kubernetes' resourceMetricsClient."""

    def __init__(self, client: Any):
        self.client = client

    async def pod_metrics(self, namespace: str, selector: str) -> list[dict]:
        answer = await self.client.request("GET", _METRICS_PATH.format(namespace=namespace),
                                           params={"labelSelector": selector or None})
        return list((answer or {}).get("items") or [])


class MetricFailure(Exception):
    """One metric could not be computed: the condition it sets and the event it records."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True, kw_only=True)
class HPAOptions:
    horizontal_pod_autoscaler_sync_period: float = 15.0
    horizontal_pod_autoscaler_tolerance: float = calc.TOLERANCE
    horizontal_pod_autoscaler_downscale_stabilization: float = calc.DOWNSCALE_STABILIZATION
    horizontal_pod_autoscaler_cpu_initialization_period: float = calc.CPU_INITIALIZATION_PERIOD
    horizontal_pod_autoscaler_initial_readiness_delay: float = calc.INITIAL_READINESS_DELAY
    # Where PodMetrics come from (None: metrics.k8s.io through the API server).
    metrics_client: Any = None


def set_condition(status: dict, ctype: str, value: str, reason: str, message: str, now: float) -> None:
    """setCondition: add or change one condition; its transition time moves only when
    its status does."""
    conditions = status.setdefault("conditions", [])
    for c in conditions:
        if c.get("type") == ctype:
            break
    else:
        c = {"type": ctype}
        conditions.append(c)
    if c.get("status") != value:
        c["lastTransitionTime"] = times.rfc3339(now)
    c.update(status=value, reason=reason, message=message)


def _milli(q: Any) -> int:
    return int(quantity.parse_quantity(q) * 1000)


def _format_milli(milli: int) -> str:
    return quantity.format_quantity(quantity.parse_quantity(f"{milli}m"))


class HorizontalPodAutoscalerController(Controller):
    name = "horizontalpodautoscaling"
    queue_name = "horizontalpodautoscaler"
    event_source = "horizontal-pod-autoscaler"
    Options = HPAOptions

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options: HPAOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.options = options or HPAOptions()
        self.metrics: MetricsClient = self.options.metrics_client or RESTMetricsClient(client)
        self.history: dict[str, calc.History] = {}
        self.hpa_informer = factory.informer("horizontalpodautoscalers")
        self.pod_informer = factory.informer("pods")
        self.hpa_informer.add_handler(
            on_add=lambda hpa: self.enqueue(key_of(hpa)),
            # The controller's own status writes are updates too: only a new spec (or
            # metadata) asks for a sync before the period is up.
            on_update=lambda old, new: self.enqueue(key_of(new)) if _spec_changed(old, new) else None,
            on_delete=lambda hpa: self.queue.forget(key_of(hpa)))
        self.informers += [self.hpa_informer, self.pod_informer]

    # -- the loop --------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        hpa = self.hpa_informer.store.get(key)
        if hpa is None:
            log.info("Horizontal Pod Autoscaler %s has been deleted", key)
            self.history.pop(key, None)
            return
        try:
            await self.reconcile_autoscaler(copy.deepcopy(hpa), key)
        finally:
            self.queue.add_after(key, self.options.horizontal_pod_autoscaler_sync_period)

    def _event(self, hpa: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(hpa, type_, reason, message)

    async def _target(self, ref: dict) -> Resource:
        """The REST resource of a scaleTargetRef: the known kinds, then discovery."""
        probe = {"apiVersion": ref.get("apiVersion", ""), "kind": ref.get("kind", "")}
        try:
            return self.client.resources.for_object(probe)
        except errors.NotFound:
            pass
        await self.client.discover()  # a custom resource registered since
        try:
            return self.client.resources.for_object(probe)
        except errors.NotFound:
            group = probe["apiVersion"].rpartition("/")[0]
            raise errors.NotFound(f'no matches for kind "{probe["kind"]}" in group "{group}"') from None

    async def reconcile_autoscaler(self, hpa: dict, key: str) -> None:
        hpa.setdefault("apiVersion", "autoscaling/v2")
        hpa.setdefault("kind", "HorizontalPodAutoscaler")
        # Wall time for what is compared with timestamps in objects (pods' start and
        # readiness, samples, conditions); the monotonic clock for the recommendation and
        # scale-event history, intervals measured here (Go's time.Now() compares those
        # on its monotonic reading, too).
        now, mono = self.clock.now(), self.clock.monotonic()
        spec, md = hpa.get("spec") or {}, hpa["metadata"]
        status = hpa.setdefault("status", {})
        original = copy.deepcopy(status)
        ref = spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind')}/{md['namespace']}/{ref.get('name')}"

        try:
            target = await self._target(ref)
            scale = await self.client.get_scale(target, ref.get("name", ""), namespace=md["namespace"])
        except errors.APIError as exc:
            self._event(hpa, WARNING, "FailedGetScale", exc.message)
            set_condition(status, "AbleToScale", "False", "FailedGetScale",
                          f"the HPA controller was unable to get the target's current scale: {exc.message}", now)
            await self._write_status(hpa, original)
            log.warning("failed to query scale subresource for %s: %s", reference, exc.message)
            return
        set_condition(status, "AbleToScale", "True", "SucceededGetScale",
                      "the HPA controller was able to get the target's current scale", now)
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        history = self.history.setdefault(key, calc.History())
        if not history.recommendations:
            history.recommendations.append((current, mono))  # recordInitialRecommendation

        min_replicas = spec.get("minReplicas") or 1
        max_replicas = spec.get("maxReplicas") or 1
        metric_statuses: list[dict] | None = None
        rescale, reason, desired = True, "", 0
        if current == 0:
            rescale = False
            set_condition(status, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero", now)
        elif current > max_replicas:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", max_replicas
        elif current < min_replicas:
            reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
        else:
            proposal, metric_name, metric_statuses, error = await self.compute_replicas_for_metrics(
                hpa, scale, status, now=now)
            if proposal is None:
                self._set_status(hpa, current, status.get("desiredReplicas", 0), metric_statuses, False, now)
                await self._write_status(hpa, original)
                self._event(hpa, WARNING, "FailedComputeMetricsReplicas", error)
                log.warning("failed to compute desired number of replicas based on listed metrics for %s: %s",
                            reference, error)
                return
            desired = proposal
            if desired > current:
                reason = f"{metric_name} above target"
            elif desired < current:
                reason = "All metrics below target"
            behavior = spec.get("behavior")
            if behavior is None:
                n = calc.normalize(history, current=current, desired=desired, min_replicas=min_replicas,
                                   max_replicas=max_replicas, now=mono, downscale_stabilization=self.options
                                   .horizontal_pod_autoscaler_downscale_stabilization)
            else:
                n = calc.normalize_with_behavior(
                    history, behavior, current=current, desired=desired, min_replicas=min_replicas,
                    max_replicas=max_replicas, now=mono,
                    downscale_stabilization=self.options.horizontal_pod_autoscaler_downscale_stabilization)
            set_condition(status, "AbleToScale", "True", n.able_reason, n.able_message, now)
            set_condition(status, "ScalingLimited", "True" if n.limited else "False",
                          n.limited_reason, n.limited_message, now)
            desired = n.replicas
            rescale = desired != current

        if rescale:
            try:
                # An update of the Scale read above (get and update are what the HPA's role
                # grants on */scale): a target changed meanwhile is a Conflict, retried.
                scale["spec"] = {**(scale.get("spec") or {}), "replicas": desired}
                await self.client.request("PUT", target.path(namespace=md["namespace"], name=ref["name"],
                                                             subresource="scale"), body=scale)
            except errors.APIError as exc:
                self._event(hpa, WARNING, "FailedRescale",
                            f"New size: {desired}; reason: {reason}; error: {exc.message}")
                set_condition(status, "AbleToScale", "False", "FailedUpdateScale",
                              f"the HPA controller was unable to update the target scale: {exc.message}", now)
                self._set_status(hpa, current, status.get("desiredReplicas", 0), metric_statuses, False, now)
                await self._write_status(hpa, original)
                raise
            set_condition(status, "AbleToScale", "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}", now)
            self._event(hpa, NORMAL, "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            calc.record_scale_event(history, spec.get("behavior"), current, desired, mono)
            log.info("Successful rescale of %s, old size: %d, new size: %d, reason: %s",
                     md["name"], current, desired, reason)
        else:
            desired = current
        self._set_status(hpa, current, desired, metric_statuses, rescale, now)
        await self._write_status(hpa, original)

    # -- metrics ---------------------------------------------------------------------

    async def compute_replicas_for_metrics(self, hpa: dict, scale: dict, status: dict, *, now: float
                                           ) -> tuple[int | None, str, list[dict], str]:
        """computeReplicasForMetrics: (the highest proposal or None, the metric it came
        from, each metric's status, the error to report)."""
        selector_text = (scale.get("status") or {}).get("selector") or ""
        if not selector_text:
            self._event(hpa, WARNING, "SelectorRequired", "selector is required")
            set_condition(status, "ScalingActive", "False", "InvalidSelector",
                          "the HPA target's scale is missing a selector", now)
            return None, "", [], "selector is required"
        try:
            selector = labels.parse(selector_text)
        except errors.BadRequest as exc:
            message = f"couldn't convert selector into a corresponding internal selector object: {exc.message}"
            self._event(hpa, WARNING, "InvalidSelector", message)
            set_condition(status, "ScalingActive", "False", "InvalidSelector", message, now)
            return None, "", [], message
        namespace = hpa["metadata"]["namespace"]
        pods = [p for p in self.pod_informer.store.list()
                if p["metadata"].get("namespace") == namespace and selector.matches(p["metadata"].get("labels") or {})]
        # None (an HPA made at autoscaling/v1 without a CPU target): Kubernetes' default.
        specs = (hpa.get("spec") or {}).get("metrics") or [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]
        spec_replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        best: int | None = None
        best_name = ""
        statuses: list[dict] = []
        failures: list[MetricFailure] = []
        for m in specs:
            try:
                proposal, name, metric_status = await self.compute_replicas_for_metric(
                    hpa, m, spec_replicas, selector_text, pods, now=now)
            except MetricFailure as failure:
                self._event(hpa, WARNING, failure.reason, failure.message)
                failures.append(failure)
                statuses.append({"type": ""})  # kept, so statuses line up with specs
                continue
            statuses.append(metric_status)
            if best is None or proposal > best:
                best, best_name = proposal, name
        if failures:
            error = (f"invalid metrics ({len(failures)} invalid out of {len(specs)}), "
                     f"first error is: {failures[0].message}")
            if best is None or best < spec_replicas:
                set_condition(status, "ScalingActive", "False", failures[0].reason,
                              f"the HPA was unable to compute the replica count: {failures[0].message}", now)
                return None, "", statuses, error
        set_condition(status, "ScalingActive", "True", "ValidMetricFound",
                      f"the HPA was able to successfully calculate a replica count from {best_name}", now)
        return best, best_name, statuses, ""

    async def compute_replicas_for_metric(self, hpa: dict, m: dict, current: int, selector: str,
                                          pods: list[dict], *, now: float) -> tuple[int, str, dict]:
        kind = m.get("type")
        if kind not in ("Resource", "ContainerResource"):
            field = {"Pods": "pods", "Object": "object", "External": "external"}.get(str(kind))
            if field is None:
                raise MetricFailure("InvalidMetricSourceType", f'unknown metric source type "{kind}"')
            name = ((m.get(field) or {}).get("metric") or {}).get("name", "")
            api = "external.metrics.k8s.io" if kind == "External" else "custom.metrics.k8s.io"
            raise MetricFailure(f"FailedGet{kind}Metric",
                                f"unable to get metric {name}: no {api} API is served")
        field = "resource" if kind == "Resource" else "containerResource"
        source = m.get(field) or {}
        resource, container = source.get("name", ""), source.get("container", "")
        target = source.get("target") or {}
        failure = "FailedGetResourceMetric" if kind == "Resource" else "FailedGetContainerResourceMetric"
        tolerance = self.options.horizontal_pod_autoscaler_tolerance
        timing = {"cpu_initialization_period": self.options.horizontal_pod_autoscaler_cpu_initialization_period,
                  "initial_readiness_delay": self.options.horizontal_pod_autoscaler_initial_readiness_delay}
        namespace = hpa["metadata"]["namespace"]
        if target.get("averageValue") is not None:
            try:
                samples = await self.resource_metric(namespace, selector, resource, container, now=now)
                replicas, usage = calc.raw_replicas(current, _milli(target["averageValue"]), resource, pods,
                                                    samples, now=now, tolerance=tolerance, **timing)
            except calc.MetricError as exc:
                raise MetricFailure(failure, f"failed to get {resource} usage: {exc}") from None
            return replicas, f"{resource} resource", {"type": kind, field: {
                **({"container": container} if container else {}), "name": resource,
                "current": {"averageValue": _format_milli(usage)}}}
        if target.get("averageUtilization") is None:
            raise MetricFailure(failure, "invalid resource metric source: neither an average utilization target "
                                         "nor an average value (usage) target was set")
        try:
            samples = await self.resource_metric(namespace, selector, resource, container, now=now)
            replicas, utilization, raw = calc.resource_replicas(
                current, int(target["averageUtilization"]), resource, pods, samples, now=now,
                tolerance=tolerance, container=container, **timing)
        except calc.MetricError as exc:
            raise MetricFailure(failure, f"failed to get {resource} utilization: {exc}") from None
        return replicas, f"{resource} resource utilization (percentage of request)", {"type": kind, field: {
            **({"container": container} if container else {}), "name": resource,
            "current": {"averageUtilization": utilization, "averageValue": _format_milli(raw)}}}

    async def resource_metric(self, namespace: str, selector: str, resource: str, container: str, *,
                              now: float) -> dict[str, calc.PodMetric]:
        """GetResourceMetric: each pod's usage of `resource` (summed over its containers,
        or `container`'s), leaving out pods missing a container's figure and stale samples."""
        try:
            items = await self.metrics.pod_metrics(namespace, selector)
        except errors.APIError as exc:
            raise calc.MetricError(f"unable to get metrics for resource {resource}: unable to fetch metrics "
                                   f"from resource metrics API: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - a dropped connection is a failed fetch
            raise calc.MetricError(f"unable to get metrics for resource {resource}: unable to fetch metrics "
                                   f"from resource metrics API: {exc}") from None
        if not items:
            raise calc.MetricError(f"unable to get metrics for resource {resource}: "
                                   "no metrics returned from resource metrics API")
        out: dict[str, calc.PodMetric] = {}
        found_container = not container
        for item in items:
            containers = item.get("containers") or []
            if container:
                containers = [c for c in containers if c.get("name") == container]
                found_container = found_container or bool(containers)
            usage = [(c.get("usage") or {}).get(resource) for c in containers]
            if not containers or any(u is None for u in usage):
                continue
            try:
                value = sum(_milli(u) for u in usage)
                stamp = times.parse(item.get("timestamp") or "")
                window = _seconds(item.get("window"))
            except ValueError:
                continue
            if now - stamp > 2 * max(window, 1.0):
                continue  # stale: the scrape after it is overdue
            out[item["metadata"]["name"]] = calc.PodMetric(value, stamp, window)
        if not found_container:
            raise calc.MetricError(f"unable to get metrics for resource {resource}: failed to get container "
                                   f"metrics: container {container} not present in metrics for any pod")
        return out

    # -- status ----------------------------------------------------------------------

    def _set_status(self, hpa: dict, current: int, desired: int, metrics: list[dict] | None,
                    rescale: bool, now: float) -> None:
        old = hpa.get("status") or {}
        status: dict[str, Any] = {"currentReplicas": current, "desiredReplicas": desired}
        if old.get("lastScaleTime"):
            status["lastScaleTime"] = old["lastScaleTime"]
        if metrics:
            status["currentMetrics"] = metrics
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        if rescale:
            status["lastScaleTime"] = times.rfc3339(now)
        hpa["status"] = status

    async def _write_status(self, hpa: dict, original: dict) -> None:
        hpa["status"].setdefault("desiredReplicas", 0)  # never omitted, as Kubernetes writes it
        if hpa.get("status") == original:
            return
        try:
            await self.client.update_status(hpa)
        except errors.APIError as exc:
            self._event(hpa, WARNING, "FailedUpdateStatus", exc.message)
            raise


def _seconds(window: Any) -> float:
    """A metav1.Duration ("30s", "1m0.5s") in seconds."""
    return parse_duration(window) if isinstance(window, str) and window else 0.0


def _spec_changed(old: dict, new: dict) -> bool:
    return old.get("spec") != new.get("spec")
