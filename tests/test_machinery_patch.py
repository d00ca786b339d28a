import copy
import json

import pytest

from machinery.errors import BadRequest, Invalid, UnsupportedMediaType
from machinery.patch import (json_patch, merge_patch, strategic_merge_patch,
                             three_way_strategic_patch)


def frozen(*args):
    """Deep copies to compare against afterwards: every function must leave inputs alone."""
    return copy.deepcopy(args)


def no_directives(obj):
    """True when no `$`-prefixed key is anywhere in obj."""
    return "\"$" not in json.dumps(obj)


# --- RFC 7386 -------------------------------------------------------------------------------

MERGE = [  # RFC 7386 appendix A, plus nesting
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ({"spec": {"replicas": 1, "x": {"y": 1}}}, {"spec": {"replicas": 3}},
     {"spec": {"replicas": 3, "x": {"y": 1}}}),
]


@pytest.mark.parametrize("target,patch,want", MERGE)
def test_merge_patch(target, patch, want):
    before = frozen(target, patch)
    got = merge_patch(target, patch)
    assert got == want
    assert (target, patch) == before


def test_merge_patch_result_shares_nothing_with_inputs():
    target, patch = {"a": {"b": [1]}, "c": {"d": 1}}, {"c": {"e": [2]}}
    got = merge_patch(target, patch)
    got["a"]["b"].append(9)
    got["c"]["e"].append(9)
    assert target == {"a": {"b": [1]}, "c": {"d": 1}} and patch == {"c": {"e": [2]}}


# --- RFC 6902 -------------------------------------------------------------------------------

JSON_PATCH = [  # RFC 6902 appendix A
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
     {"baz": "qux", "foo": "bar"}),
    ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
     {"foo": ["bar", "qux", "baz"]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}],
     {"foo": ["bar", "baz"]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
     {"baz": "boo", "foo": "bar"}),
    ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
     {"foo": ["all", "cows", "eat", "grass"]}),
    ({"baz": "qux", "foo": ["a", 2, "c"]},
     [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
     {"baz": "qux", "foo": ["a", 2, "c"]}),
    ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
     {"foo": "bar", "child": {"grandchild": {}}}),
    ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
     {"foo": ["bar", ["abc", "def"]]}),
    ({"foo": None}, [{"op": "test", "path": "/foo", "value": None}], {"foo": None}),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10},
                          {"op": "replace", "path": "/~1", "value": 8}], {"/": 8, "~1": 10}),
    ({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": 1}, "c": {"b": 1}}),
    ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
    ({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}], {"a": 1}),
    ({"metadata": {"labels": {"a": "1"}}},
     [{"op": "add", "path": "/metadata/labels/b", "value": "2"},
      {"op": "remove", "path": "/metadata/labels/a"}],
     {"metadata": {"labels": {"b": "2"}}}),
]


@pytest.mark.parametrize("doc,ops,want", JSON_PATCH)
def test_json_patch(doc, ops, want):
    before = frozen(doc, ops)
    assert json_patch(doc, ops) == want
    assert (doc, ops) == before


JSON_PATCH_INVALID = [  # well-formed patches that cannot be applied: 422
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "missing path"),
    ({"foo": "bar"}, [{"op": "remove", "path": "/nope"}], "missing path"),
    ({"foo": "bar"}, [{"op": "replace", "path": "/nope", "value": 1}], "missing path"),
    ({"foo": "bar"}, [{"op": "move", "from": "/nope", "path": "/x"}], "missing path"),
    ({"foo": "bar"}, [{"op": "copy", "from": "/nope", "path": "/x"}], "missing path"),
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "test operation failed"),
    ({"a": True}, [{"op": "test", "path": "/a", "value": 1}], "test operation failed"),
    ({"foo": [1]}, [{"op": "add", "path": "/foo/5", "value": 2}], "out of bounds"),
    ({"foo": [1]}, [{"op": "add", "path": "/foo/01", "value": 2}], "invalid array index"),
    ({"foo": [1]}, [{"op": "remove", "path": "/foo/-"}], "invalid array index"),
    ({"foo": "bar"}, [{"op": "add", "path": "foo", "value": 2}], "invalid JSON pointer"),
    ({"foo": "bar"}, [{"op": "frobnicate", "path": "/foo"}], "unknown json patch operation"),
    ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}], "own child"),
]


@pytest.mark.parametrize("doc,ops,message", JSON_PATCH_INVALID)
def test_json_patch_errors_are_invalid(doc, ops, message):
    before = frozen(doc)
    with pytest.raises(Invalid) as e:
        json_patch(doc, ops)
    assert message in e.value.message
    assert (doc,) == before


@pytest.mark.parametrize("ops", [
    {"op": "add", "path": "/a", "value": 1},
    [{"path": "/a", "value": 1}],
    ["add"],
    [{"op": "add", "path": "/a"}],
    [{"op": "add", "value": 1}],
    [{"op": "move", "path": "/a"}],
    [{"op": "test", "path": "/a"}],
])
def test_malformed_json_patch_is_bad_request(ops):
    with pytest.raises(BadRequest):
        json_patch({"a": 1}, ops)


# --- strategic merge patch ------------------------------------------------------------------

def deployment(containers, **meta):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", **meta},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": containers}}}}


NGINX = {"name": "nginx", "image": "nginx:1.27",
         "ports": [{"containerPort": 80, "protocol": "TCP"}],
         "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "0"}]}


def containers_of(obj):
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return spec["containers"]


def test_kubectl_image_change_keeps_ports_and_env_and_drops_label():
    original = deployment([NGINX], labels={"app": "web", "tier": "fe"})
    patch = {"metadata": {"labels": {"tier": None}},
             "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                            "containers": [{"image": "nginx:1.28",
                                                            "name": "nginx"}]}}}}
    before = frozen(original, patch)
    got = strategic_merge_patch(original, patch, "Deployment", "apps")
    want = copy.deepcopy(original)
    want["metadata"]["labels"] = {"app": "web"}
    want["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    assert got == want
    assert (original, patch) == before
    assert no_directives(got)


def pod(spec=None, status=None, **meta):
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **meta},
           "spec": spec if spec is not None else {"containers": [copy.deepcopy(NGINX)]}}
    if status is not None:
        obj["status"] = status
    return obj


def C(name, **kw):
    return {"name": name, **kw}


SMP = [
    # (name, kind, group, original, patch, want)
    # Without $setElementOrder Kubernetes puts new items before the server-only ones
    # (kubectl patch docs show the added container first); kubectl apply sends the order.
    ("new container goes before server-only ones",
     "Pod", "", pod({"containers": [C("a", image="x")]}),
     {"spec": {"containers": [C("b", image="y")]}},
     pod({"containers": [C("b", image="y"), C("a", image="x")]})),
    ("container merged by name; other fields kept",
     "Pod", "", pod({"containers": [C("a", image="x", args=["1"])], "restartPolicy": "Always"}),
     {"spec": {"containers": [C("a", image="y")]}},
     pod({"containers": [C("a", image="y", args=["1"])], "restartPolicy": "Always"})),
    ("$patch: delete removes the element with that merge key",
     "Pod", "", pod({"containers": [C("a"), C("b"), C("c")]}),
     {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}},
     pod({"containers": [C("a"), C("c")]})),
    ("$patch: replace in a list replaces the whole list",
     "Pod", "", pod({"containers": [C("a", image="x"), C("b")]}),
     {"spec": {"containers": [{"$patch": "replace"}, C("c", image="z")]}},
     pod({"containers": [C("c", image="z")]})),
    ("$patch: replace on a map replaces the map",
     "Pod", "", pod(labels={"a": "1", "b": "2"}),
     {"metadata": {"labels": {"$patch": "replace", "c": "3"}}},
     pod(labels={"c": "3"})),
    ("$patch: delete on a map empties it",
     "Pod", "", pod(labels={"a": "1"}),
     {"metadata": {"labels": {"$patch": "delete"}}},
     pod(labels={})),
    ("$patch: merge is a plain merge",
     "Pod", "", pod(labels={"a": "1"}),
     {"metadata": {"labels": {"$patch": "merge", "b": "2"}}},
     pod(labels={"a": "1", "b": "2"})),
    ("null deletes a field; a null for a missing field is ignored",
     "Pod", "", pod({"containers": [C("a")], "nodeName": "n1"}),
     {"spec": {"nodeName": None, "hostname": None}},
     pod({"containers": [C("a")]})),
    ("nulls inside a new element are dropped",
     "Pod", "", pod({"containers": [C("a")]}),
     {"spec": {"containers": [C("b", image=None, command=["sh"])]}},
     pod({"containers": [C("b", command=["sh"]), C("a")]})),
    ("env merges by name, volumeMounts by mountPath, ports by containerPort",
     "Pod", "", pod({"containers": [C("a", env=[{"name": "X", "value": "1"}],
                                      volumeMounts=[{"name": "v", "mountPath": "/d"}],
                                      ports=[{"containerPort": 80, "name": "http"}])]}),
     {"spec": {"containers": [C("a", env=[{"name": "Y", "value": "2"}],
                                volumeMounts=[{"mountPath": "/d", "readOnly": True}],
                                ports=[{"containerPort": 80, "protocol": "TCP"}])]}},
     pod({"containers": [C("a", env=[{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}],
                           volumeMounts=[{"name": "v", "mountPath": "/d", "readOnly": True}],
                           ports=[{"containerPort": 80, "name": "http", "protocol": "TCP"}])]})),
    ("envFrom, args and tolerations are atomic",
     "Pod", "", pod({"containers": [C("a", args=["1", "2"],
                                      envFrom=[{"configMapRef": {"name": "x"}}])],
                     "tolerations": [{"key": "a", "operator": "Exists"}]}),
     {"spec": {"containers": [C("a", args=["3"], envFrom=[{"secretRef": {"name": "s"}}])],
               "tolerations": [{"key": "b", "operator": "Exists"}]}},
     pod({"containers": [C("a", args=["3"], envFrom=[{"secretRef": {"name": "s"}}])],
          "tolerations": [{"key": "b", "operator": "Exists"}]})),
    ("volumes merge by name and honour $retainKeys",
     "Pod", "", pod({"containers": [C("a")], "volumes": [{"name": "v", "emptyDir": {}},
                                                          {"name": "w", "emptyDir": {}}]}),
     {"spec": {"volumes": [{"name": "v", "$retainKeys": ["configMap", "name"],
                            "configMap": {"name": "cm"}}]}},
     pod({"containers": [C("a")], "volumes": [{"name": "v", "configMap": {"name": "cm"}},
                                               {"name": "w", "emptyDir": {}}]})),
    ("finalizers are a set; $deleteFromPrimitiveList removes",
     "Pod", "", pod(finalizers=["a", "b"]),
     {"metadata": {"finalizers": ["b", "c"], "$deleteFromPrimitiveList/finalizers": ["a"]}},
     pod(finalizers=["b", "c"])),
    ("ownerReferences merge by uid",
     "Pod", "", pod(ownerReferences=[{"uid": "1", "name": "rs", "kind": "ReplicaSet"}]),
     {"metadata": {"ownerReferences": [{"uid": "1", "controller": True},
                                       {"uid": "2", "name": "x"}]}},
     pod(ownerReferences=[{"uid": "1", "name": "rs", "kind": "ReplicaSet", "controller": True},
                          {"uid": "2", "name": "x"}])),
    ("pod status conditions merge by type; containerStatuses are atomic",
     "Pod", "", pod(status={"conditions": [{"type": "Ready", "status": "False"},
                                           {"type": "PodScheduled", "status": "True"}],
                            "containerStatuses": [{"name": "a", "ready": False}, {"name": "b"}]}),
     {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                 "containerStatuses": [{"name": "a", "ready": True}]}},
     pod(status={"conditions": [{"type": "Ready", "status": "True"},
                                {"type": "PodScheduled", "status": "True"}],
                 "containerStatuses": [{"name": "a", "ready": True}]})),
    ("$setElementOrder puts patch items in order; server-only items keep their place",
     "Pod", "", pod({"containers": [C("a"), C("b"), C("c")]}),
     {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
               "containers": [C("c", image="z")]}},
     pod({"containers": [C("b"), C("c", image="z"), C("a")]})),
    ("server-only items stay next to the item they followed",
     "Pod", "", pod({"containers": [C("a"), C("b"), C("x"), C("c"), C("d")]}),
     {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "d"},
                                               {"name": "c"}]}},
     pod({"containers": [C("b"), C("a"), C("x"), C("d"), C("c")]})),
    ("$setElementOrder with no list in the patch only reorders",
     "Pod", "", pod({"containers": [C("a"), C("b")]}),
     {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}},
     pod({"containers": [C("b"), C("a")]})),
    ("$setElementOrder on a primitive list",
     "Pod", "", pod(finalizers=["x", "y", "z"]),
     {"metadata": {"$setElementOrder/finalizers": ["z", "x", "w"], "finalizers": ["w"],
                   "$deleteFromPrimitiveList/finalizers": ["y"]}},
     pod(finalizers=["z", "x", "w"])),
    ("a new list with directives inside is cleaned",
     "Pod", "", pod({"restartPolicy": "Never"}),
     {"spec": {"$setElementOrder/containers": [{"name": "a"}],
               "containers": [C("a", image="x"), {"name": "gone", "$patch": "delete"}]}},
     pod({"restartPolicy": "Never", "containers": [C("a", image="x")]})),
    ("deployment strategy honours $retainKeys",
     "Deployment", "apps",
     {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}},
     {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
     {"spec": {"strategy": {"type": "Recreate"}}}),
    ("deployment status conditions merge by type",
     "Deployment", "apps",
     {"status": {"conditions": [{"type": "Available", "status": "False"}]}},
     {"status": {"conditions": [{"type": "Progressing", "status": "True"}]}},
     {"status": {"conditions": [{"type": "Progressing", "status": "True"},
                                {"type": "Available", "status": "False"}]}}),
    ("replicaset template containers merge by name",
     "ReplicaSet", "apps", deployment([C("a", image="x", args=["1"])]),
     {"spec": {"template": {"spec": {"containers": [C("a", image="y")]}}}},
     deployment([C("a", image="y", args=["1"])])),
    ("service ports merge by port",
     "Service", "", {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}},
     {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 9090}]}},
     {"spec": {"ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 9090},
                         {"port": 443}]}}),
    ("endpoints subsets are atomic",
     "Endpoints", "", {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
     {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]},
     {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}),
    ("node conditions and addresses merge by type; taints are atomic",
     "Node", "", {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
                  "status": {"conditions": [{"type": "Ready", "status": "False"},
                                            {"type": "MemoryPressure", "status": "False"}],
                             "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                           {"type": "Hostname", "address": "n1"}]}},
     {"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
      "status": {"conditions": [{"type": "Ready", "status": "True"}],
                 "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]}},
     {"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
      "status": {"conditions": [{"type": "Ready", "status": "True"},
                                {"type": "MemoryPressure", "status": "False"}],
                 "addresses": [{"type": "InternalIP", "address": "10.0.0.9"},
                               {"type": "Hostname", "address": "n1"}]}}),
    ("configmap data merges like a map",
     "ConfigMap", "", {"data": {"a": "1", "b": "2"}}, {"data": {"b": None, "c": "3"}},
     {"data": {"a": "1", "c": "3"}}),
    ("lease spec fields replace",
     "Lease", "coordination.k8s.io", {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
     {"spec": {"holderIdentity": "b"}},
     {"spec": {"holderIdentity": "b", "leaseDurationSeconds": 15}}),
    ("a value of another type replaces",
     "ConfigMap", "", {"data": {"a": "1"}}, {"data": ["x"]}, {"data": ["x"]}),
]


@pytest.mark.parametrize("name,kind,group,original,patch,want", SMP, ids=[r[0] for r in SMP])
def test_strategic_merge_patch(name, kind, group, original, patch, want):
    before = frozen(original, patch)
    got = strategic_merge_patch(original, patch, kind, group)
    assert got == want
    assert (original, patch) == before
    assert no_directives(got)


SMP_BAD = [
    ("merge element without its merge key", pod({"containers": [C("a")]}),
     {"spec": {"containers": [{"image": "x"}]}}, BadRequest),
    ("delete directive without merge key", pod({"containers": [C("a")]}),
     {"spec": {"containers": [{"$patch": "delete"}]}}, BadRequest),
    ("unknown $patch value", pod(), {"spec": {"$patch": "explode"}}, BadRequest),
    ("patch field not in $retainKeys", pod(),
     {"spec": {"$retainKeys": ["containers"], "nodeName": "n"}}, BadRequest),
    ("$setElementOrder not matching the patch list", pod({"containers": [C("a"), C("b")]}),
     {"spec": {"$setElementOrder/containers": [{"name": "a"}],
               "containers": [C("b", image="x")]}}, BadRequest),
    ("patch not an object", pod(), ["x"], BadRequest),
]


@pytest.mark.parametrize("name,original,patch,error", SMP_BAD, ids=[r[0] for r in SMP_BAD])
def test_strategic_merge_patch_rejects(name, original, patch, error):
    with pytest.raises(error):
        strategic_merge_patch(original, patch, "Pod")


def test_strategic_merge_patch_refuses_kinds_without_strategies():
    with pytest.raises(UnsupportedMediaType) as e:
        strategic_merge_patch({}, {}, "Widget", "example.com")
    assert e.value.code == 415
    with pytest.raises(UnsupportedMediaType):
        strategic_merge_patch({}, {}, "Deployment")  # the group matters


# --- three-way patch (kubectl apply) --------------------------------------------------------

def manifest(containers=None, labels=None, **spec):
    obj = deployment(containers or [copy.deepcopy(NGINX)])
    obj["metadata"]["labels"] = labels if labels is not None else {"app": "web"}
    del obj["spec"]["replicas"]
    obj["spec"].update(spec)
    return obj


def live(obj, **spec):
    """What the server holds after applying `obj`: defaults, status, fields of others."""
    cur = copy.deepcopy(obj)
    cur["metadata"].update(uid="u1", resourceVersion="7", generation=1,
                           annotations={"deployment.kubernetes.io/revision": "1"})
    cur["spec"].setdefault("replicas", 1)
    cur["spec"].setdefault("strategy", {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": "25%"}})
    cur["spec"].update(spec)
    for c in containers_of(cur):
        c.setdefault("imagePullPolicy", "IfNotPresent")
    cur["status"] = {"replicas": cur["spec"]["replicas"]}
    return cur


def apply(last, modified, current):
    before = frozen(last, modified, current)
    p = three_way_strategic_patch(last, modified, current, "Deployment", "apps")
    assert (last, modified, current) == before
    return p, strategic_merge_patch(current, p, "Deployment", "apps")


def test_unchanged_manifest_gives_empty_patch():
    m = manifest()
    p, _ = apply(m, copy.deepcopy(m), live(m))
    assert p == {}


def test_patch_matches_what_kubectl_sends():
    last = manifest(labels={"app": "web", "tier": "fe"})
    new = manifest(labels={"app": "web"})
    containers_of(new)[0]["image"] = "nginx:1.28"
    p, got = apply(last, new, live(last))
    assert p == {"metadata": {"labels": {"tier": None}},
                 "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                                "containers": [{"image": "nginx:1.28",
                                                                "name": "nginx"}]}}}}
    assert got["metadata"]["labels"] == {"app": "web"}
    c = containers_of(got)[0]
    assert c["image"] == "nginx:1.28" and c["ports"] == NGINX["ports"] and c["env"] == NGINX["env"]


def test_field_removed_from_manifest_goes():
    last = manifest(minReadySeconds=5)
    new = manifest()
    c = containers_of(new)[0]
    c["env"] = [e for e in c["env"] if e["name"] != "DEBUG"]
    del c["ports"]
    _, got = apply(last, new, live(last))
    assert "minReadySeconds" not in got["spec"]
    gc = containers_of(got)[0]
    assert gc["env"] == [{"name": "MODE", "value": "prod"}]
    assert "ports" not in gc
    assert gc["imagePullPolicy"] == "IfNotPresent"  # defaulted by the server: kept


def test_replicas_changed_by_scale_and_absent_from_manifest_are_kept():
    m = manifest()
    current = live(m, replicas=5)
    new = copy.deepcopy(m)
    containers_of(new)[0]["image"] = "nginx:1.28"
    p, got = apply(m, new, current)
    assert "replicas" not in p["spec"]
    assert got["spec"]["replicas"] == 5
    assert got["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "1"}
    assert got["status"] == current["status"]


def test_replicas_in_manifest_win_over_live_value():
    m = manifest(replicas=2)
    _, got = apply(m, copy.deepcopy(m), live(m, replicas=5))
    assert got["spec"]["replicas"] == 2


def test_container_removed_from_manifest_is_deleted_but_injected_sidecar_stays():
    last = manifest([copy.deepcopy(NGINX), C("helper", image="busybox")])
    current = live(last)
    containers_of(current).append(C("injected", image="proxy"))  # added by someone else
    new = manifest([copy.deepcopy(NGINX), C("added", image="redis")])
    p, got = apply(last, new, current)
    items = p["spec"]["template"]["spec"]["containers"]
    assert {"$patch": "delete", "name": "helper"} in items
    # As in Kubernetes, the new container lands after the server-only one.
    assert [c["name"] for c in containers_of(got)] == ["nginx", "injected", "added"]
    assert no_directives(got)


def test_container_order_change_is_sent():
    a, b = C("a", image="x"), C("b", image="y")
    last = manifest([a, b])
    new = manifest([copy.deepcopy(b), copy.deepcopy(a)])
    p, got = apply(last, new, live(last))
    assert p["spec"]["template"]["spec"]["$setElementOrder/containers"] == [
        {"name": "b"}, {"name": "a"}]
    assert [c["name"] for c in containers_of(got)] == ["b", "a"]


def test_finalizers_removed_from_manifest_go_and_others_stay():
    last = manifest()
    last["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    current = live(last)
    current["metadata"]["finalizers"].append("controller/c")
    new = manifest()
    new["metadata"]["finalizers"] = ["example.com/b", "example.com/d"]
    p, got = apply(last, new, current)
    assert p["metadata"]["$deleteFromPrimitiveList/finalizers"] == ["example.com/a"]
    assert sorted(got["metadata"]["finalizers"]) == [
        "controller/c", "example.com/b", "example.com/d"]


def test_strategy_type_change_clears_defaulted_rolling_update():
    last = manifest(strategy={"type": "RollingUpdate"})
    new = manifest(strategy={"type": "Recreate"})
    p, got = apply(last, new, live(last))
    assert p["spec"]["strategy"] == {"$retainKeys": ["type"], "type": "Recreate"}
    assert got["spec"]["strategy"] == {"type": "Recreate"}


def test_without_last_applied_nothing_is_deleted():
    m = manifest()
    current = live(m)
    current["metadata"]["labels"]["extra"] = "x"
    new = manifest()
    containers_of(new)[0]["image"] = "nginx:1.28"
    _, got = apply(None, new, current)
    assert got["metadata"]["labels"] == {"app": "web", "extra": "x"}
    assert containers_of(got)[0]["image"] == "nginx:1.28"


def test_annotation_removed_from_manifest_goes_others_stay():
    last = manifest()
    last["metadata"]["annotations"] = {"mine": "1"}
    current = live(last)
    current["metadata"]["annotations"]["mine"] = "1"
    new = manifest()
    new["metadata"]["annotations"] = {"other": "2"}
    p, got = apply(last, new, current)
    assert p["metadata"]["annotations"] == {"mine": None, "other": "2"}
    assert got["metadata"]["annotations"] == {
        "deployment.kubernetes.io/revision": "1", "other": "2"}
