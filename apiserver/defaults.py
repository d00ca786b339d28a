"""Kubernetes' defaulting for the kinds this server serves: the `SetDefaults_*` functions
of k8s.io/api, plus what the default admission plugins add to every pod (Priority,
ServiceAccount, DefaultTolerationSeconds) and Secret's `stringData` folding.

Contract: `apply_defaults(obj, kind)` mutates `obj` in place, before validation (as
Kubernetes defaults on decode). It is idempotent: a default only fills what is absent,
so running it again, or on an update that carries the stored object's values, changes
nothing. Nulls in maps are dropped first, since Kubernetes reads null as absent. It
never raises on a malformed object: what is of the wrong type is left for validation
to report. Pod `status.phase`/`status.qosClass` are filled only when missing, which in
practice means at creation (the server resets pod status then and carries it over after).
"""
from __future__ import annotations

import base64
import copy
from typing import Any

import orjson

from apiserver.strategies.autoscaling import default_hpa
from apiserver.flowcontrol.strategy import default_priority_level
from apiserver.validation import parse_quantity


def apply_defaults(obj: dict, kind: str) -> None:
    for k in [k for k, x in obj.items() if x is None]:
        del obj[k]
    for x in obj.values():
        if isinstance(x, (dict, list)) and _has_null(x):
            _drop_nulls(x)
    fn = _BY_KIND.get(kind)
    if fn is not None:
        fn(obj)


def _has_null(v: Any) -> bool:
    """Whether a null may be inside: asked of the serialized form, in C, so the walk
    below (the costly part of defaulting a big object) runs only where one is."""
    try:
        return b"null" in orjson.dumps(v)
    except (TypeError, orjson.JSONEncodeError):  # not JSON-shaped (dates from YAML): walk
        return True


def _drop_nulls(v: Any) -> None:
    if isinstance(v, dict):
        for k in [k for k, x in v.items() if x is None]:
            del v[k]
        for x in v.values():
            _drop_nulls(x)
    elif isinstance(v, list):
        for x in v:
            _drop_nulls(x)


def _obj(d: dict, key: str) -> dict:
    """d[key] to default into: created when absent, a scratch dict when malformed."""
    v = d.setdefault(key, {})
    return v if isinstance(v, dict) else {}


def _dicts(v: Any) -> list[dict]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _defaults(d: dict, **values: Any) -> None:
    """Set what is unset, as Go's defaulters see it: a missing or null field, or an
    empty string (a Go string's zero value, so `dnsPolicy: ""` is ClusterFirst)."""
    for k, v in values.items():
        if d.get(k) is None or (isinstance(v, str) and d[k] == ""):
            d[k] = v


# --- pods and pod templates -----------------------------------------------------------

def _pull_policy(image: Any) -> str:
    """SetDefaults_Container: `Always` when the tag is `latest`, given or implied (no tag
    and no digest), else `IfNotPresent`. Only the tag counts: `x@sha256:...` is
    IfNotPresent, `x:latest@sha256:...` Always (as Kubernetes' ParseImageName reads it)."""
    image = image if isinstance(image, str) else ""
    name, at, _digest = image.partition("@")
    _, colon, tag = name.rpartition("/")[2].partition(":")
    if not colon:
        return "IfNotPresent" if at else "Always"
    return "Always" if tag == "latest" else "IfNotPresent"


def _http_get(handler: Any) -> None:
    get = _m(handler).get("httpGet")
    if isinstance(get, dict):
        _defaults(get, path="/", scheme="HTTP")


def _m(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _container(c: dict, host_network: bool) -> None:
    _defaults(c, imagePullPolicy=_pull_policy(c.get("image")),
              terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File",
              resources={})
    for p in _dicts(c.get("ports")):
        p.setdefault("protocol", "TCP")
        if host_network and "containerPort" in p:
            p.setdefault("hostPort", p["containerPort"])
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(key)
        if isinstance(probe, dict):
            _defaults(probe, timeoutSeconds=1, periodSeconds=10, successThreshold=1,
                      failureThreshold=3)
            _http_get(probe)
    lifecycle = _m(c.get("lifecycle"))
    for hook in ("postStart", "preStop"):
        _http_get(lifecycle.get(hook))
    for e in _dicts(c.get("env")):
        field_ref = _m(e.get("valueFrom")).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


_VOLUME_MODES = ("configMap", "secret", "downwardAPI", "projected")


def _pod_spec(spec: dict) -> None:
    _defaults(spec, restartPolicy="Always", terminationGracePeriodSeconds=30,
              dnsPolicy="ClusterFirst", schedulerName="default-scheduler", securityContext={},
              enableServiceLinks=True)
    host_network = spec.get("hostNetwork") is True
    for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        _container(c, host_network)
    for v in _dicts(spec.get("volumes")):
        if set(v) <= {"name"}:
            v["emptyDir"] = {}
        for key in _VOLUME_MODES:
            if isinstance(v.get(key), dict):
                v[key].setdefault("defaultMode", 420)  # 0644
        if isinstance(v.get("hostPath"), dict):
            v["hostPath"].setdefault("type", "")


_SYSTEM_PRIORITIES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}
_NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _tolerates(t: dict, key: str) -> bool:
    return (t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists")) \
        and t.get("effect") in (None, "", "NoExecute")


def _pod(obj: dict) -> None:
    spec = _obj(obj, "spec")
    _pod_spec(spec)
    # Pods only, never templates: SetDefaults_Pod copies limits into absent requests.
    for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        resources = _obj(c, "resources")
        limits = resources.get("limits")
        if isinstance(limits, dict) and limits:
            requests = _obj(resources, "requests")
            for name, q in limits.items():
                requests.setdefault(name, q)
    # What the default admission plugins set on every pod.
    priority_class = spec.get("priorityClassName")
    spec.setdefault("priority", _SYSTEM_PRIORITIES.get(priority_class, 0)
                    if isinstance(priority_class, str) else 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        for key in _NOT_READY_TAINTS:
            if not any(_tolerates(t, key) for t in _dicts(tolerations)):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300})
    status = _obj(obj, "status")
    status.setdefault("phase", "Pending")
    if "qosClass" not in status:
        status["qosClass"] = qos_class(spec)


def qos_class(spec: dict) -> str:
    """Guaranteed, Burstable or BestEffort, as Kubernetes' GetPodQOS (cpu and memory)."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    guaranteed = True
    for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        resources = _m(c.get("resources"))
        for part, into in (("requests", requests), ("limits", limits)):
            found = set()
            for name, q in _m(resources.get(part)).items():
                value = parse_quantity(q)
                if name in ("cpu", "memory") and value is not None and value > 0:
                    into[name] = into.get(name, 0) + value
                    found.add(name)
            if part == "limits" and found != {"cpu", "memory"}:
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def _template(spec: dict) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        _pod_spec(_obj(template, "spec"))


# --- other kinds ----------------------------------------------------------------------

def _deployment(obj: dict) -> None:
    spec = _obj(obj, "spec")
    _defaults(spec, replicas=1, revisionHistoryLimit=10, progressDeadlineSeconds=600)
    strategy = _obj(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _defaults(_obj(strategy, "rollingUpdate"), maxUnavailable="25%", maxSurge="25%")
    _template(spec)


def _statefulset(obj: dict) -> None:
    """apps/v1's SetDefaults_StatefulSet, and the claim templates' PVC defaults."""
    spec = _obj(obj, "spec")
    _defaults(spec, replicas=1, revisionHistoryLimit=10, podManagementPolicy="OrderedReady")
    strategy = _obj(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _defaults(_obj(strategy, "rollingUpdate"), partition=0)
    _defaults(_obj(spec, "persistentVolumeClaimRetentionPolicy"), whenDeleted="Retain", whenScaled="Retain")
    for claim in _dicts(spec.get("volumeClaimTemplates")):
        _defaults(_obj(claim, "spec"), volumeMode="Filesystem")
        _defaults(_obj(claim, "status"), phase="Pending")
    _template(spec)


def _replicaset(obj: dict) -> None:
    spec = _obj(obj, "spec")
    spec.setdefault("replicas", 1)
    _template(spec)


def _service(obj: dict) -> None:
    spec = _obj(obj, "spec")
    _defaults(spec, type="ClusterIP", sessionAffinity="None")
    for p in _dicts(spec.get("ports")):
        p.setdefault("protocol", "TCP")
        if "port" in p:
            p.setdefault("targetPort", p["port"])
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if spec["sessionAffinity"] == "ClientIP":
        _obj(_obj(spec, "sessionAffinityConfig"), "clientIP").setdefault("timeoutSeconds", 10800)


def _namespace(obj: dict) -> None:
    md = _obj(obj, "metadata")
    if isinstance(md.get("name"), str):
        _obj(md, "labels")["kubernetes.io/metadata.name"] = md["name"]
    # Kubernetes sets the finalizer at creation only; once deletion has begun, the
    # namespace controller's removal of it must stick.
    if not md.get("deletionTimestamp"):
        _obj(obj, "spec").setdefault("finalizers", ["kubernetes"])
    _obj(obj, "status").setdefault("phase", "Active")


def _secret(obj: dict) -> None:
    obj.setdefault("type", "Opaque")
    # stringData is write-only: Kubernetes folds it into data (it wins) and never stores
    # it. A malformed one stays, for validation to report.
    string_data = obj.get("stringData")
    if isinstance(string_data, dict) and all(isinstance(v, str) for v in string_data.values()):
        del obj["stringData"]
        if string_data:
            _obj(obj, "data").update(
                (k, base64.b64encode(v.encode()).decode()) for k, v in string_data.items())


def _node(obj: dict) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and "allocatable" not in status and "capacity" in status:
        status["allocatable"] = copy.deepcopy(status["capacity"])


def _endpoints(obj: dict) -> None:
    for subset in _dicts(obj.get("subsets")):
        for p in _dicts(subset.get("ports")):
            p.setdefault("protocol", "TCP")


def _endpointslice(obj: dict) -> None:
    # discovery/v1's SetDefaults_EndpointPort: a port's name is "" and its protocol TCP.
    for p in _dicts(obj.get("ports")):
        if p.get("name") is None:
            p["name"] = ""
        if p.get("protocol") is None:
            p["protocol"] = "TCP"


def _job(obj: dict) -> None:
    """batch/v1's SetDefaults_Job."""
    spec = _obj(obj, "spec")
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    _defaults(spec, parallelism=1, completionMode="NonIndexed", suspend=False)
    if "backoffLimit" not in spec:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    pfp = spec.get("podFailurePolicy")
    for rule in _dicts(pfp.get("rules")) if isinstance(pfp, dict) else []:
        for pattern in _dicts(rule.get("onPodConditions")):
            pattern.setdefault("status", "True")
    spec.setdefault("podReplacementPolicy",
                    "Failed" if "podFailurePolicy" in spec else "TerminatingOrFailed")
    template = spec.get("template")
    tlabels = (template.get("metadata") or {}).get("labels") if isinstance(template, dict) else None
    md = _obj(obj, "metadata")
    if isinstance(tlabels, dict) and tlabels and not md.get("labels"):
        md["labels"] = dict(tlabels)
    _template(spec)


def _cronjob(obj: dict) -> None:
    """batch/v1's SetDefaults_CronJob; the job template's pod template gets pod defaults."""
    spec = _obj(obj, "spec")
    _defaults(spec, concurrencyPolicy="Allow", suspend=False, successfulJobsHistoryLimit=3,
              failedJobsHistoryLimit=1)
    _template(_obj(_obj(spec, "jobTemplate"), "spec"))

def _daemonset(obj: dict) -> None:
    """apps/v1's SetDefaults_DaemonSet."""
    spec = _obj(obj, "spec")
    strategy = _obj(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _defaults(_obj(strategy, "rollingUpdate"), maxUnavailable=1, maxSurge=0)
    _defaults(spec, revisionHistoryLimit=10)
    _template(spec)


def _replicationcontroller(obj: dict) -> None:
    """core/v1's SetDefaults_ReplicationController: selector and labels from the template's."""
    spec = _obj(obj, "spec")
    template = spec.get("template")
    labels = (template.get("metadata") or {}).get("labels") if isinstance(template, dict) else None
    if isinstance(labels, dict):
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        md = _obj(obj, "metadata")
        if not md.get("labels"):
            md["labels"] = dict(labels)
    spec.setdefault("replicas", 1)
    if isinstance(template, dict):
        _template(spec)


def _persistentvolume(obj: dict) -> None:
    """SetDefaults_PersistentVolume (status.phase is the strategy's, at creation)."""
    spec = _obj(obj, "spec")
    _defaults(spec, persistentVolumeReclaimPolicy="Retain", volumeMode="Filesystem")


def _persistentvolumeclaim(obj: dict) -> None:
    _defaults(_obj(obj, "spec"), volumeMode="Filesystem")


def _storageclass(obj: dict) -> None:
    _defaults(obj, reclaimPolicy="Delete", volumeBindingMode="Immediate")


_RBAC_GROUP = "rbac.authorization.k8s.io"


def _binding(obj: dict) -> None:
    """Kubernetes' rbac/v1 defaults: a roleRef and a User or Group subject without an
    apiGroup are in RBAC's group; a ServiceAccount subject is in the core group."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = _RBAC_GROUP
    for s in _dicts(obj.get("subjects")):
        if not s.get("apiGroup") and s.get("kind") in ("User", "Group"):
            s["apiGroup"] = _RBAC_GROUP


_BY_KIND = {"Pod": _pod, "Deployment": _deployment, "ReplicaSet": _replicaset,
            "StatefulSet": _statefulset,
            "Service": _service, "Namespace": _namespace, "Secret": _secret, "Node": _node,
            "Endpoints": _endpoints, "EndpointSlice": _endpointslice, "RoleBinding": _binding,
            "ClusterRoleBinding": _binding,
            "Job": _job, "CronJob": _cronjob, "DaemonSet": _daemonset,
            "ReplicationController": _replicationcontroller, "PersistentVolume": _persistentvolume,
            "PersistentVolumeClaim": _persistentvolumeclaim, "StorageClass": _storageclass,
            "HorizontalPodAutoscaler": default_hpa, "PriorityLevelConfiguration": default_priority_level}
