"""Admission: defaulting and validation (schema, semantics, updates), with no server running."""
from __future__ import annotations

import copy
import json
import random

import pytest

from apiserver import validation
from apiserver.defaults import apply_defaults
from apiserver.validation import schema_causes, semantic_causes, strip_nulls, update_causes
from machinery import errors

NAMESPACED = {"Pod": True, "Deployment": True, "ReplicaSet": True, "Service": True,
              "ConfigMap": True, "Secret": True, "ServiceAccount": True, "Event": True,
              "Endpoints": True, "Lease": True, "Scale": True, "Binding": True,
              "Namespace": False, "Node": False}


def meta(name: str, namespaced: bool = True, **extra) -> dict:
    md = {"name": name, **extra}
    if namespaced:
        md["namespace"] = "default"
    return md


def pod() -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta("web-1", labels={"app": "web"}),
            "spec": {"containers": [{
                "name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "MODE", "value": "prod"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": 1, "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"port": "http"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data"}]}}


def template_spec() -> dict:
    return {"containers": [{"name": "web", "image": "nginx"}]}


def deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
            "spec": {"selector": {"matchLabels": {"app": "web"},
                                  "matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                        "values": ["db"]}]},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": template_spec()}}}


def replicaset() -> dict:
    d = deployment()
    d.update(kind="ReplicaSet")
    return d


def service() -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                               {"name": "metrics", "port": 9090, "targetPort": 9090}]}}


def configmap() -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"),
            "data": {"app.conf": "x=1"}, "binaryData": {"blob": "AAEC"}}


def secret() -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta("creds"),
            "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "admin"}}


VALID = {
    "Pod": pod,
    "Deployment": deployment,
    "ReplicaSet": replicaset,
    "Service": service,
    "ConfigMap": configmap,
    "Secret": secret,
    "Namespace": lambda: {"apiVersion": "v1", "kind": "Namespace", "metadata": meta("team-a", False)},
    "Node": lambda: {"apiVersion": "v1", "kind": "Node", "metadata": meta("node-1.local", False),
                     "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}},
    "ServiceAccount": lambda: {"apiVersion": "v1", "kind": "ServiceAccount",
                               "metadata": meta("default")},
    "Event": lambda: {"apiVersion": "v1", "kind": "Event", "metadata": meta("web-1.17a3c"),
                      "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
                      "reason": "Scheduled", "type": "Normal", "count": 1,
                      "firstTimestamp": "2025-01-01T00:00:00Z", "eventTime": None},
    "Endpoints": lambda: {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web"),
                          "subsets": [{"addresses": [{"ip": "10.0.0.5"}],
                                       "ports": [{"port": 80, "name": "http"}]}]},
    "Lease": lambda: {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "metadata": meta("kube-scheduler"),
                      "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                               "renewTime": "2025-01-01T00:00:00.000000Z"}},
    "Scale": lambda: {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta("web"),
                      "spec": {"replicas": 3}},
    "Binding": lambda: {"apiVersion": "v1", "kind": "Binding", "metadata": meta("web-1"),
                        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}},
}


def all_causes(obj: dict, *, strict: bool = True) -> list[dict]:
    kind = obj["kind"]
    apply_defaults(obj, kind)
    return (schema_causes(obj, strict=strict)
            + semantic_causes(obj, kind=kind, namespaced=NAMESPACED[kind]))


def fields(causes: list[dict]) -> set[tuple[str, str]]:
    return {(c["field"], c["reason"]) for c in causes}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_objects_have_no_causes(kind):
    assert all_causes(VALID[kind]()) == []


def test_pod_as_the_server_and_kubelet_write_it_is_valid():
    p = pod()
    apply_defaults(p, "Pod")
    p["metadata"].update(
        uid="6f1c", creationTimestamp="2025-01-01T00:00:00Z", resourceVersion="42",
        generation=1, deletionTimestamp=None,
        ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                          "uid": "1234", "controller": True, "blockOwnerDeletion": True}],
        managedFields=[{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                        "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:containers": {}}}}])
    p["spec"]["nodeName"] = "node-1"
    p["status"].update(
        phase="Running", hostIP="10.0.0.1", hostIPs=[{"ip": "10.0.0.1"}], podIP="10.1.0.5",
        podIPs=[{"ip": "10.1.0.5"}], startTime="2025-01-01T00:00:01Z",
        conditions=[{"type": "Ready", "status": "True", "lastProbeTime": None,
                     "lastTransitionTime": "2025-01-01T00:00:02Z"}],
        containerStatuses=[{"name": "web", "image": "nginx:1.27", "imageID": "", "ready": True,
                            "restartCount": 0, "started": True, "containerID": "minik8s://1",
                            "state": {"running": {"startedAt": "2025-01-01T00:00:02Z"}},
                            "lastState": {}}])
    assert schema_causes(p, strict=True) == []
    assert semantic_causes(p, kind="Pod", namespaced=True) == []


def pod_with_status() -> dict:
    p = pod()
    p["status"] = {"conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "web", "image": "nginx:1.27", "imageID": "",
                                          "ready": True, "restartCount": 0}]}
    return p


def test_every_unenforced_required_field_is_one_the_schemas_require():
    defs = json.loads((validation._schema_set(False).dir / "_definitions.json").read_text())["$defs"]
    for name, fields_ in validation._NOT_ENFORCED.items():
        assert fields_ <= set(defs[name].get("required", ())), name


def set_path(obj: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    cur = obj
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if value is DELETE:
        del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return obj


DELETE = object()

SCHEMA_CASES = [
    # (name, build, path to set, value, strict, want {(field, reason)})
    ("unknown field, strict", pod, "spec.foo", 1, True,
     {("spec.foo", "FieldValueInvalid")}),
    ("unknown field in a list item", pod, "spec.containers.0.imagee", "x", True,
     {("spec.containers[0].imagee", "FieldValueInvalid")}),
    ("unknown field, not strict", pod, "spec.foo", 1, False, set()),
    ("wrong type", pod, "spec.containers.0.ports.0.containerPort", "80", True,
     {("spec.containers[0].ports[0].containerPort", "FieldValueTypeInvalid")}),
    ("bool is not an integer", deployment, "spec.replicas", True, True,
     {("spec.replicas", "FieldValueTypeInvalid")}),
    ("label value type, keyed", pod, "metadata.labels.tier", 3, True,
     {("metadata.labels[tier]", "FieldValueTypeInvalid")}),
    ("int-or-string rejects a bool", service, "spec.ports.0.targetPort", True, True,
     {("spec.ports[0].targetPort", "FieldValueTypeInvalid")}),
    ("int-or-string takes an int", service, "spec.ports.0.targetPort", 8080, True, set()),
    ("quantity takes a number", pod, "spec.containers.0.resources.limits.cpu", 0.5, True, set()),
    ("quantity rejects an object", pod, "spec.containers.0.resources.limits.cpu", {}, True,
     {("spec.containers[0].resources.limits[cpu]", "FieldValueTypeInvalid")}),
    ("null is absent", pod, "spec.nodeName", None, True, set()),
    ("null required field is missing", pod, "spec.containers.0.ports.0.containerPort", None, True,
     {("spec.containers[0].ports[0].containerPort", "FieldValueRequired")}),
    ("wrong apiVersion", pod, "apiVersion", "v2", True, {("kind", "FieldValueNotSupported")}),
    # Kubernetes enforces OpenAPI `required` only where its validation code does.
    ("event without involvedObject: the schema does not mind", VALID["Event"],
     "involvedObject", DELETE, True, set()),
    ("container status without imageID and image", pod_with_status, "status.containerStatuses.0",
     {"name": "web", "ready": False, "restartCount": 0}, True, set()),
    ("container status with nothing at all", pod_with_status, "status.containerStatuses.0", {},
     True, set()),
    ("pod condition without status", pod_with_status, "status.conditions.0", {"type": "Ready"},
     True, set()),
    ("pod condition without type", pod_with_status, "status.conditions.0", {"status": "True"},
     True, {("status.conditions[0].type", "FieldValueRequired")}),
    ("node without systemInfo's fields", VALID["Node"], "status",
     {"nodeInfo": {"kubeletVersion": "v1.32.0"}, "addresses": [{"type": "InternalIP"}]}, True,
     set()),
    ("container without name", pod, "spec.containers.0.name", DELETE, True,
     {("spec.containers[0].name", "FieldValueRequired")}),
    ("volume mount without mountPath", pod, "spec.containers.0.volumeMounts.0.mountPath",
     DELETE, True, {("spec.containers[0].volumeMounts[0].mountPath", "FieldValueRequired")}),
    ("owner reference without uid", pod, "metadata.ownerReferences",
     [{"apiVersion": "v1", "kind": "X", "name": "x"}], True,
     {("metadata.ownerReferences[0].uid", "FieldValueRequired")}),
]


@pytest.mark.parametrize("name,build,path,value,strict,want", SCHEMA_CASES,
                         ids=[c[0] for c in SCHEMA_CASES])
def test_schema_causes(name, build, path, value, strict, want):
    obj = set_path(build(), path, value)
    assert fields(schema_causes(obj, strict=strict)) == want


def test_unknown_field_message_names_the_field():
    causes = schema_causes(set_path(pod(), "spec.foo", 1), strict=True)
    assert causes == [{"reason": "FieldValueInvalid", "field": "spec.foo",
                       "message": 'unknown field "spec.foo"'}]


def test_every_problem_is_listed_together():
    p = pod()
    p["spec"]["bogus"] = True
    p["spec"]["containers"][0].update(ports=[{"containerPort": "80"}], image="")
    p["spec"]["containers"].append({"name": "web", "image": "busybox", "command": "sleep"})
    p["metadata"]["name"] = "Web_1"
    got = fields(all_causes(p))
    assert got == {("spec.bogus", "FieldValueInvalid"),
                   ("spec.containers[0].ports[0].containerPort", "FieldValueTypeInvalid"),
                   ("spec.containers[1].command", "FieldValueTypeInvalid"),
                   ("spec.containers[0].image", "FieldValueRequired"),
                   ("spec.containers[1].name", "FieldValueDuplicate"),
                   ("metadata.name", "FieldValueInvalid")}
    err = errors.invalid("Pod", "Web_1", all_causes(p))
    status = err.to_status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert len(status["details"]["causes"]) == 6
    assert "spec.containers[0].image: Required value" in status["message"]


def with_(build, fn):
    def make():
        obj = build()
        fn(obj)
        return obj
    return make


def c0(obj: dict) -> dict:
    return obj["spec"]["containers"][0]


SEMANTIC_CASES = [
    # (name, build, want {(field, reason)})
    ("missing image", with_(pod, lambda o: c0(o).pop("image")),
     {("spec.containers[0].image", "FieldValueRequired")}),
    ("missing name", with_(pod, lambda o: o["metadata"].pop("name")),
     {("metadata.name", "FieldValueRequired")}),
    ("name not a DNS subdomain", with_(pod, lambda o: o["metadata"].update(name="Web_1")),
     {("metadata.name", "FieldValueInvalid")}),
    ("namespace name is a DNS label",
     with_(VALID["Namespace"], lambda o: o["metadata"].update(name="team.a")),
     {("metadata.name", "FieldValueInvalid")}),
    ("service name is a DNS-1035 label", with_(service, lambda o: o["metadata"].update(name="1web")),
     {("metadata.name", "FieldValueInvalid")}),
    ("namespace on a cluster-scoped kind",
     with_(VALID["Node"], lambda o: o["metadata"].update(namespace="default")),
     {("metadata.namespace", "FieldValueForbidden")}),
    ("bad label key", with_(pod, lambda o: o["metadata"]["labels"].update({"-bad": "x"})),
     {("metadata.labels", "FieldValueInvalid")}),
    ("bad label value", with_(pod, lambda o: o["metadata"]["labels"].update(app="a b")),
     {("metadata.labels", "FieldValueInvalid")}),
    ("label value too long", with_(pod, lambda o: o["metadata"]["labels"].update(app="a" * 64)),
     {("metadata.labels", "FieldValueInvalid")}),
    ("prefixed label key", with_(pod, lambda o: o["metadata"]["labels"].update(
        {"app.kubernetes.io/name": "web"})), set()),
    ("bad annotation key", with_(pod, lambda o: o["metadata"].update(annotations={"a/b/c": ""})),
     {("metadata.annotations", "FieldValueInvalid")}),
    ("annotations too large", with_(pod, lambda o: o["metadata"].update(
        annotations={"big": "x" * (256 * 1024)})), {("metadata.annotations", "FieldValueTooLong")}),
    ("unqualified finalizer", with_(pod, lambda o: o["metadata"].update(finalizers=["mine"])),
     {("metadata.finalizers[0]", "FieldValueInvalid")}),
    ("no containers", with_(pod, lambda o: o["spec"].update(containers=[])),
     {("spec.containers", "FieldValueRequired")}),
    ("duplicate container name", with_(pod, lambda o: o["spec"].update(
        initContainers=[{"name": "web", "image": "busybox"}])),
     {("spec.initContainers[0].name", "FieldValueDuplicate")}),
    ("container name not a DNS label", with_(pod, lambda o: c0(o).update(name="Web")),
     {("spec.containers[0].name", "FieldValueInvalid")}),
    ("restart policy", with_(pod, lambda o: o["spec"].update(restartPolicy="Sometimes")),
     {("spec.restartPolicy", "FieldValueNotSupported")}),
    ("port out of range", with_(pod, lambda o: c0(o)["ports"].append({"containerPort": 70000})),
     {("spec.containers[0].ports[1].containerPort", "FieldValueInvalid")}),
    ("duplicate port name", with_(pod, lambda o: c0(o)["ports"].append(
        {"containerPort": 81, "name": "http"})),
     {("spec.containers[0].ports[1].name", "FieldValueDuplicate")}),
    ("port name not an IANA name", with_(pod, lambda o: c0(o)["ports"][0].update(name="8080")),
     {("spec.containers[0].ports[0].name", "FieldValueInvalid")}),
    ("env name", with_(pod, lambda o: c0(o)["env"].append({"name": "1X"})),
     {("spec.containers[0].env[1].name", "FieldValueInvalid")}),
    ("mount of an unknown volume", with_(pod, lambda o: o["spec"].pop("volumes")),
     {("spec.containers[0].volumeMounts[0].name", "FieldValueNotFound")}),
    ("bad quantity", with_(pod, lambda o: c0(o)["resources"]["limits"].update(memory="lots")),
     {("spec.containers[0].resources.limits[memory]", "FieldValueInvalid")}),
    ("request above limit", with_(pod, lambda o: c0(o)["resources"]["requests"].update(cpu="1.5")),
     {("spec.containers[0].resources.requests", "FieldValueInvalid")}),
    ("request equal to limit", with_(pod, lambda o: c0(o)["resources"]["requests"].update(
        memory="0.125Gi")), set()),
    ("selector does not match template",
     with_(deployment, lambda o: o["spec"]["template"]["metadata"].update(labels={"app": "api"})),
     {("spec.template.metadata.labels", "FieldValueInvalid")}),
    ("selector expression excludes template",
     with_(replicaset, lambda o: o["spec"]["template"]["metadata"]["labels"].update(tier="db")),
     {("spec.template.metadata.labels", "FieldValueInvalid")}),
    ("selector required", with_(deployment, lambda o: o["spec"].pop("selector")),
     {("spec.selector", "FieldValueRequired")}),
    ("empty selector", with_(replicaset, lambda o: o["spec"].update(selector={})),
     {("spec.selector", "FieldValueInvalid")}),
    ("negative replicas", with_(deployment, lambda o: o["spec"].update(replicas=-1)),
     {("spec.replicas", "FieldValueInvalid")}),
    ("template must restart always", with_(deployment, lambda o: o["spec"]["template"]["spec"]
                                           .update(restartPolicy="Never")),
     {("spec.template.spec.restartPolicy", "FieldValueNotSupported")}),
    ("template container checked", with_(deployment, lambda o: o["spec"]["template"]["spec"]
                                         ["containers"][0].pop("image")),
     {("spec.template.spec.containers[0].image", "FieldValueRequired")}),
    ("bad percent", with_(deployment, lambda o: o["spec"].update(
        strategy={"rollingUpdate": {"maxSurge": "ten"}})),
     {("spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid")}),
    ("both surge and unavailable zero", with_(deployment, lambda o: o["spec"].update(
        strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})),
     {("spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid")}),
    ("service needs ports", with_(service, lambda o: o["spec"].pop("ports")),
     {("spec.ports", "FieldValueRequired")}),
    ("headless service without ports", with_(service, lambda o: (
        o["spec"].pop("ports"), o["spec"].update(clusterIP="None"))), set()),
    ("external name service", lambda: {"apiVersion": "v1", "kind": "Service", "metadata": meta("db"),
                                       "spec": {"type": "ExternalName",
                                                "externalName": "db.example.com"}}, set()),
    ("unnamed port among several", with_(service, lambda o: o["spec"]["ports"][1].pop("name")),
     {("spec.ports[1].name", "FieldValueRequired")}),
    ("service type", with_(service, lambda o: o["spec"].update(type="Magic")),
     {("spec.type", "FieldValueNotSupported")}),
    ("cluster IP", with_(service, lambda o: o["spec"].update(clusterIP="10.0.0.300")),
     {("spec.clusterIP", "FieldValueInvalid")}),
    ("configmap key", with_(configmap, lambda o: o["data"].update({"a/b": ""})),
     {("data[a/b]", "FieldValueInvalid")}),
    ("configmap key in data and binaryData", with_(configmap, lambda o: o["data"].update(
        blob="")), {("binaryData[blob]", "FieldValueInvalid")}),
    ("secret data is base64", with_(secret, lambda o: o["data"].update(password="hunter2")),
     {("data[password]", "FieldValueInvalid")}),
    ("lease duration", with_(VALID["Lease"], lambda o: o["spec"].update(leaseDurationSeconds=0)),
     {("spec.leaseDurationSeconds", "FieldValueInvalid")}),
    ("binding target", with_(VALID["Binding"], lambda o: o["target"].pop("name")),
     {("target.name", "FieldValueRequired")}),
    ("scale replicas", with_(VALID["Scale"], lambda o: o["spec"].update(replicas=-2)),
     {("spec.replicas", "FieldValueInvalid")}),
    ("event namespace", with_(VALID["Event"], lambda o: o["involvedObject"].update(namespace="x")),
     {("involvedObject.namespace", "FieldValueInvalid")}),
    ("event about nothing, in default", with_(VALID["Event"], lambda o: o.pop("involvedObject")),
     set()),
    ("event about nothing, elsewhere", with_(VALID["Event"], lambda o: (
        o.pop("involvedObject"), o["metadata"].update(namespace="team"))),
     {("involvedObject.namespace", "FieldValueInvalid")}),
]


@pytest.mark.parametrize("name,build,want", SEMANTIC_CASES, ids=[c[0] for c in SEMANTIC_CASES])
def test_semantic_causes(name, build, want):
    assert fields(all_causes(build())) == want


def test_selector_mismatch_message():
    causes = all_causes(with_(deployment, lambda o: o["spec"]["template"]["metadata"].update(
        labels={"app": "api"}))())
    assert "`selector` does not match template `labels`" in causes[0]["message"]


def test_secret_data_is_not_echoed():
    causes = all_causes(with_(secret, lambda o: o["data"].update(password="hunter2!"))())
    assert "hunter2" not in str(causes)


def test_semantic_checks_survive_malformed_objects():
    junk = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5, "labels": []},
            "spec": {"containers": "web", "volumes": [None, 3], "initContainers": [{"name": []}]}}
    for kind in NAMESPACED:
        obj = copy.deepcopy(junk)
        obj["spec"]["selector"] = "x"
        obj["spec"]["template"] = {"metadata": 1, "spec": {"containers": [{"resources": 1}]}}
        apply_defaults(obj, kind)
        semantic_causes(obj, kind=kind, namespaced=NAMESPACED[kind])
        update_causes(obj, junk, kind=kind)


def defaulted(build):
    obj = build()
    apply_defaults(obj, obj["kind"])
    return obj


UPDATE_CASES = [
    # (name, build, change applied to a copy of the stored object, want {(field, reason)})
    ("pod image", pod, lambda o: c0(o).update(image="nginx:1.28"), set()),
    ("pod labels", pod, lambda o: o["metadata"]["labels"].update(v="2"), set()),
    ("pod command", pod, lambda o: c0(o).update(command=["sh"]), {("spec", "FieldValueForbidden")}),
    ("pod container added", pod, lambda o: o["spec"]["containers"].append(
        {"name": "side", "image": "busybox"}), {("spec", "FieldValueForbidden")}),
    ("pod restart policy", pod, lambda o: o["spec"].update(restartPolicy="Never"),
     {("spec", "FieldValueForbidden")}),
    ("pod bound once", pod, lambda o: o["spec"].update(nodeName="node-1"), set()),
    ("pod toleration added", pod, lambda o: o["spec"]["tolerations"].append(
        {"key": "gpu", "operator": "Exists"}), set()),
    ("pod toleration removed", with_(pod, lambda o: o["spec"].update(tolerations=[
        {"key": "gpu", "operator": "Exists"}])), lambda o: o["spec"]["tolerations"].pop(0),
     {("spec", "FieldValueForbidden")}),
    ("pod deadline set", pod, lambda o: o["spec"].update(activeDeadlineSeconds=60), set()),
    ("pod renamed", pod, lambda o: o["metadata"].update(name="web-2"),
     {("metadata.name", "FieldValueInvalid")}),
    ("deployment selector", deployment, lambda o: o["spec"]["selector"]["matchLabels"].update(v="2"),
     {("spec.selector", "FieldValueInvalid")}),
    ("deployment replicas", deployment, lambda o: o["spec"].update(replicas=5), set()),
    ("replicaset selector", replicaset, lambda o: o["spec"].update(selector={"matchLabels": {"a": "b"}}),
     {("spec.selector", "FieldValueInvalid")}),
    ("service ports", service, lambda o: o["spec"]["ports"].pop(), set()),
    ("configmap data", configmap, lambda o: o["data"].update(x="2"), set()),
    ("secret type", secret, lambda o: o.update(type="kubernetes.io/tls"),
     {("type", "FieldValueInvalid")}),
]


@pytest.mark.parametrize("name,build,change,want", UPDATE_CASES, ids=[c[0] for c in UPDATE_CASES])
def test_update_causes(name, build, change, want):
    old = defaulted(build)
    new = copy.deepcopy(old)
    change(new)
    apply_defaults(new, new["kind"])
    assert fields(update_causes(old, new, kind=old["kind"])) == want


def test_pod_update_message_is_kubernetes():
    old = defaulted(pod)
    new = copy.deepcopy(old)
    c0(new)["command"] = ["sh"]
    (cause,) = update_causes(old, new, kind="Pod")
    assert cause["message"].startswith("Forbidden: pod updates may not change fields other "
                                       "than `spec.containers[*].image`")
    assert "spec.containers" in cause["message"]


def test_pod_node_name_is_immutable_once_set():
    old = defaulted(pod)
    old["spec"]["nodeName"] = "node-1"
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = "node-2"
    assert fields(update_causes(old, new, kind="Pod")) == {("spec", "FieldValueForbidden")}


def test_pod_active_deadline_may_only_shrink():
    old = defaulted(pod)
    old["spec"]["activeDeadlineSeconds"] = 60
    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 30
    assert update_causes(old, new, kind="Pod") == []
    new["spec"]["activeDeadlineSeconds"] = 90
    assert fields(update_causes(old, new, kind="Pod")) == {
        ("spec.activeDeadlineSeconds", "FieldValueInvalid")}


def test_service_cluster_ip_is_immutable_once_set():
    old = defaulted(service)
    new = copy.deepcopy(old)
    new["spec"].update(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    assert update_causes(old, new, kind="Service") == []  # allocation
    old = copy.deepcopy(new)
    new["spec"].update(clusterIP="10.96.0.11", clusterIPs=["10.96.0.11"])
    causes = update_causes(old, new, kind="Service")
    assert fields(causes) == {("spec.clusterIPs[0]", "FieldValueInvalid")}
    assert causes[0]["message"] == 'Invalid value: ["10.96.0.11"]: may not change once set'
    new["spec"]["type"] = "ExternalName"  # becoming an ExternalName releases the address
    assert update_causes(old, new, kind="Service") == []


@pytest.mark.parametrize("build", [configmap, secret])
def test_immutable_data(build):
    old = defaulted(build)
    old["immutable"] = True
    new = copy.deepcopy(old)
    new["data"]["extra"] = "eA=="
    assert fields(update_causes(old, new, kind=old["kind"])) == {("data", "FieldValueForbidden")}
    new = copy.deepcopy(old)
    new["immutable"] = False
    assert fields(update_causes(old, new, kind=old["kind"])) == {
        ("immutable", "FieldValueForbidden")}


# --- defaults ---------------------------------------------------------------------------

def test_pod_defaults():
    p = defaulted(pod)
    spec, c = p["spec"], p["spec"]["containers"][0]
    assert {k: spec[k] for k in ("restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy",
                                 "schedulerName", "securityContext", "enableServiceLinks",
                                 "priority", "serviceAccountName")} == {
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler", "securityContext": {}, "enableServiceLinks": True,
        "priority": 0, "serviceAccountName": "default"}
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"][0]["protocol"] == "TCP"
    assert c["readinessProbe"] == {"httpGet": {"port": "http", "path": "/", "scheme": "HTTP"},
                                   "timeoutSeconds": 1, "periodSeconds": 10,
                                   "successThreshold": 1, "failureThreshold": 3}
    assert spec["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert p["status"] == {"phase": "Pending", "qosClass": "Burstable"}


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.27", "IfNotPresent"),
    ("localhost:5000/nginx", "Always"), ("localhost:5000/nginx:1", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"), ("nginx:1@sha256:" + "a" * 64, "IfNotPresent"),
    ("nginx:latest@sha256:" + "a" * 64, "Always")])
def test_image_pull_policy(image, policy):
    p = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": image}]}}
    apply_defaults(p, "Pod")
    assert p["spec"]["containers"][0]["imagePullPolicy"] == policy


@pytest.mark.parametrize("resources,qos", [
    ({}, "BestEffort"),
    ({"requests": {"cpu": "100m"}}, "Burstable"),
    ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),  # requests default to limits
    ({"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "1024Mi"}},
     "Guaranteed"),
    ({"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}}, "Burstable"),
    ({"limits": {"cpu": "1"}}, "Burstable"),
])
def test_qos_class(resources, qos):
    p = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "x",
                                                 "resources": copy.deepcopy(resources)}]}}
    apply_defaults(p, "Pod")
    assert p["status"]["qosClass"] == qos


def test_deployment_defaults():
    d = defaulted(deployment)
    assert d["spec"]["replicas"] == 1
    assert d["spec"]["strategy"] == {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert d["spec"]["revisionHistoryLimit"] == 10
    assert d["spec"]["progressDeadlineSeconds"] == 600
    tspec = d["spec"]["template"]["spec"]
    assert tspec["restartPolicy"] == "Always"
    assert tspec["containers"][0]["imagePullPolicy"] == "Always"
    assert "priority" not in tspec and "status" not in d["spec"]["template"]


def test_other_defaults():
    s = defaulted(service)
    assert s["spec"]["type"] == "ClusterIP" and s["spec"]["sessionAffinity"] == "None"
    assert [(p["protocol"], p["targetPort"]) for p in s["spec"]["ports"]] == [
        ("TCP", "http"), ("TCP", 9090)]
    bare = {"kind": "Service", "spec": {"ports": [{"port": 80}]}}
    apply_defaults(bare, "Service")
    assert bare["spec"]["ports"][0]["targetPort"] == 80
    ns = defaulted(VALID["Namespace"])
    assert ns["spec"]["finalizers"] == ["kubernetes"] and ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team-a"
    sec = defaulted(secret)
    assert sec["type"] == "Opaque" and "stringData" not in sec
    assert sec["data"] == {"password": "aHVudGVyMg==", "user": "YWRtaW4="}
    node = defaulted(VALID["Node"])
    assert node["status"]["allocatable"] == node["status"]["capacity"]


def test_nulls_are_absent_for_defaulting():
    p = pod()
    p["spec"]["restartPolicy"] = None
    apply_defaults(p, "Pod")
    assert p["spec"]["restartPolicy"] == "Always"


@pytest.mark.parametrize("kind", sorted(VALID))
def test_defaulting_is_idempotent(kind):
    once = defaulted(VALID[kind])
    twice = copy.deepcopy(once)
    apply_defaults(twice, kind)
    assert twice == once


def test_namespace_finalizer_is_not_restored_during_deletion():
    ns = defaulted(VALID["Namespace"])
    ns["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    del ns["spec"]["finalizers"]
    apply_defaults(ns, "Namespace")
    assert "finalizers" not in ns["spec"]


# --- the fast schema check agrees with jsonschema ---------------------------------------

def _mutations(obj, rng: random.Random):
    """Copies of obj, each with one value replaced, removed, or given an extra key."""
    paths = []

    def walk(v, path):
        if path:
            paths.append(path)
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            walk(x, path + (k,))
    walk(obj, ())
    replacements = [None, True, 0, 1.0, 1.5, -3, "x", "", [], {}, ["x"], {"a": "b"}, [None]]
    for path in paths:
        for _ in range(5):
            mutated = copy.deepcopy(obj)
            parent = mutated
            for p in path[:-1]:
                parent = parent[p]
            choice, target = rng.random(), parent[path[-1]]
            if choice < 0.15 and isinstance(parent, dict):
                del parent[path[-1]]
            elif choice < 0.3 and isinstance(target, dict):
                target[rng.choice(["zz", "name", "spec", "port"])] = rng.choice(replacements)
            else:
                parent[path[-1]] = rng.choice(replacements)
            yield mutated


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("kind", sorted(VALID))
def test_fast_check_agrees_with_jsonschema(kind, strict):
    obj = defaulted(VALID[kind])
    fast, validator = validation._schema_set(strict).for_kind(obj["kind"], obj["apiVersion"])
    verdicts = []
    for mutated in _mutations(obj, random.Random(kind)):
        want = validator.is_valid(strip_nulls(mutated))
        assert fast(mutated) == want, mutated
        verdicts.append(want)
    assert True in verdicts and False in verdicts


def test_every_definition_compiles():
    for strict in (True, False):
        s = validation._schema_set(strict)
        for name in s.defs:
            s.ref(f"#/$defs/{name}")


@pytest.mark.parametrize("kind", sorted(VALID))
def test_malformed_objects_get_causes_not_exceptions(kind):
    stored = defaulted(VALID[kind])
    for mutated in _mutations(stored, random.Random(kind + "!")):
        apply_defaults(mutated, kind)
        schema_causes(mutated, strict=True)
        semantic_causes(mutated, kind=kind, namespaced=NAMESPACED[kind])
        update_causes(stored, mutated, kind=kind)
