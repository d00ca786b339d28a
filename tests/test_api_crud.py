"""CRUD semantics of the API server against a real etcd and a real uvicorn."""
import concurrent.futures
import threading

from tests.util import deployment, pod


def test_create_sets_server_fields_and_defaults(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("p1"))
    assert r.status_code == 201, r.text
    obj = r.json()
    md = obj["metadata"]
    assert md["namespace"] == ns and md["uid"] and md["creationTimestamp"].endswith("Z")
    assert int(md["resourceVersion"]) > 0
    assert obj["spec"]["restartPolicy"] == "Always"
    assert obj["spec"]["terminationGracePeriodSeconds"] == 30
    assert obj["spec"]["dnsPolicy"] == "ClusterFirst"
    assert obj["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert obj["status"]["phase"] == "Pending"
    got = http.get(f"/api/v1/namespaces/{ns}/pods/p1").json()
    assert got == obj


def test_empty_and_null_fields_are_defaulted_as_go_zero_values(http, ns):
    """`dnsPolicy: ""` and `restartPolicy: null` decode to Go's zero value, which the
    defaulters fill in; they are not validation errors."""
    body = pod("zero")
    body["spec"].update(dnsPolicy="", restartPolicy=None)
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["dnsPolicy"] == "ClusterFirst"
    assert r.json()["spec"]["restartPolicy"] == "Always"


def test_create_existing_name_is_already_exists(http, ns):
    assert http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("dup")).status_code == 201
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("dup"))
    assert r.status_code == 409
    st = r.json()
    assert st["kind"] == "Status" and st["reason"] == "AlreadyExists"
    assert st["message"] == 'pods "dup" already exists'


def test_get_missing_is_not_found_status(http, ns):
    r = http.get(f"/api/v1/namespaces/{ns}/pods/nosuch")
    assert r.status_code == 404
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": 'pods "nosuch" not found', "reason": "NotFound",
                        "details": {"name": "nosuch", "kind": "pods"}, "code": 404}


def test_stale_update_and_delete_conflict(http, ns):
    obj = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                    json={"metadata": {"name": "cm"}, "data": {"a": "1"}}).json()
    stale = dict(obj, data={"a": "2"})
    fresh = http.put(f"/api/v1/namespaces/{ns}/configmaps/cm", json=stale)
    assert fresh.status_code == 200 and fresh.json()["data"] == {"a": "2"}
    assert int(fresh.json()["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])
    r = http.put(f"/api/v1/namespaces/{ns}/configmaps/cm", json=dict(obj, data={"a": "3"}))
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    r = http.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/cm",
                     json={"preconditions": {"resourceVersion": obj["metadata"]["resourceVersion"]}})
    assert r.status_code == 409
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/cm").json()["data"] == {"a": "2"}


def test_update_without_change_keeps_resource_version(http, ns):
    obj = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                    json={"metadata": {"name": "same"}, "data": {"a": "1"}}).json()
    again = http.put(f"/api/v1/namespaces/{ns}/configmaps/same", json=obj).json()
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_generate_name(http, ns):
    body = pod("")
    body["metadata"] = {"generateName": "web-"}
    a = http.post(f"/api/v1/namespaces/{ns}/pods", json=body).json()
    b = http.post(f"/api/v1/namespaces/{ns}/pods", json=body).json()
    assert a["metadata"]["name"].startswith("web-") and len(a["metadata"]["name"]) == 9
    assert a["metadata"]["name"] != b["metadata"]["name"]


def test_generation_bumps_on_spec_change_only(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/deployments"
    d = http.post(url, json=deployment("gen")).json()
    assert d["metadata"]["generation"] == 1
    d["metadata"]["labels"]["extra"] = "yes"
    d = http.put(f"{url}/gen", json=d).json()
    assert d["metadata"]["generation"] == 1
    d["spec"]["replicas"] = 3
    d = http.put(f"{url}/gen", json=d).json()
    assert d["metadata"]["generation"] == 2
    r = http.patch(f"{url}/gen", content=b'{"spec":{"replicas":4}}',
                   headers={"content-type": "application/merge-patch+json"})
    assert r.json()["metadata"]["generation"] == 3


def test_deployment_defaults(http, ns):
    body = deployment("defs")
    del body["spec"]["replicas"]
    d = http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json=body).json()
    assert d["spec"]["replicas"] == 1
    assert d["spec"]["strategy"] == {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert d["spec"]["revisionHistoryLimit"] == 10
    assert d["spec"]["template"]["spec"]["restartPolicy"] == "Always"


def test_missing_namespace_is_not_found(http):
    r = http.post("/api/v1/namespaces/nosuchns/pods", json=pod("p"))
    assert r.status_code == 404
    assert r.json()["message"] == 'namespaces "nosuchns" not found'


def test_system_namespaces_exist(http):
    names = {n["metadata"]["name"] for n in http.get("/api/v1/namespaces").json()["items"]}
    assert {"default", "kube-system", "kube-node-lease"} <= names


def test_cluster_scoped_node(http):
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-crud"},
            "status": {"capacity": {"cpu": "2"}}}
    r = http.post("/api/v1/nodes", json=node)
    assert r.status_code == 201, r.text
    assert "namespace" not in r.json()["metadata"]
    assert r.json()["status"]["capacity"] == {"cpu": "2"}  # nodes register with status
    assert http.delete("/api/v1/nodes/n-crud").status_code == 200
    assert http.get("/api/v1/nodes/n-crud").status_code == 404


def test_status_subresource_separates_spec_and_status(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/deployments"
    d = http.post(url, json=deployment("st")).json()
    # The main resource ignores status...
    d["status"] = {"replicas": 7}
    d["spec"]["replicas"] = 2
    d = http.put(f"{url}/st", json=d).json()
    assert d["spec"]["replicas"] == 2 and d.get("status", {}).get("replicas") is None
    # ...and the status subresource ignores everything else.
    d["status"] = {"replicas": 2, "observedGeneration": 2}
    d["spec"]["replicas"] = 9
    d["metadata"]["labels"]["sneaky"] = "x"
    d["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    s = http.put(f"{url}/st/status", json=d).json()
    assert s["status"] == {"replicas": 2, "observedGeneration": 2}
    assert s["spec"]["replicas"] == 2 and "sneaky" not in s["metadata"]["labels"]
    assert s["metadata"]["generation"] == 2
    # As Kubernetes' status strategies: a Deployment's status update takes annotations
    # but not labels; a Pod's takes labels but not ownerReferences.
    assert s["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "2"}
    p = http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("st")).json()
    p["metadata"]["labels"] = {"seen": "yes"}
    p["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}]
    p["status"] = {"phase": "Running"}
    p = http.put(f"/api/v1/namespaces/{ns}/pods/st/status", json=p).json()
    assert p["status"]["phase"] == "Running" and p["metadata"]["labels"] == {"seen": "yes"}
    assert "ownerReferences" not in p["metadata"]


def test_binding_sets_node_once(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("b"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    r = http.post(f"/api/v1/namespaces/{ns}/pods/b/binding", json=binding)
    assert r.status_code == 201, r.text
    p = http.get(f"/api/v1/namespaces/{ns}/pods/b").json()
    assert p["spec"]["nodeName"] == "node-1"
    assert {"type": "PodScheduled", "status": "True"}.items() <= p["status"]["conditions"][0].items()
    r = http.post(f"/api/v1/namespaces/{ns}/pods/b/binding", json=dict(binding, target={"name": "node-2"}))
    assert r.status_code == 409
    assert http.get(f"/api/v1/namespaces/{ns}/pods/b").json()["spec"]["nodeName"] == "node-1"


def test_node_name_is_immutable(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("imm", node="n1"))
    r = http.patch(f"/api/v1/namespaces/{ns}/pods/imm", content=b'{"spec":{"nodeName":"n2"}}',
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 422, r.text


def test_scale_subresource(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/deployments"
    http.post(url, json=deployment("sc", replicas=1))
    s = http.get(f"{url}/sc/scale").json()
    assert s["kind"] == "Scale" and s["apiVersion"] == "autoscaling/v1"
    assert s["spec"]["replicas"] == 1 and s["status"]["selector"] == "app=sc"
    r = http.patch(f"{url}/sc/scale", content=b'{"spec":{"replicas":3}}',
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 3
    assert http.get(f"{url}/sc").json()["spec"]["replicas"] == 3
    r = http.patch(f"{url}/sc/scale", content=b'{"spec":{"replicas":-1}}',
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 422


def test_patch_types(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/deployments"
    http.post(url, json=deployment("pt"))
    smp = {"metadata": {"labels": {"app": None, "tier": "web"}},
           "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}],
                                          "containers": [{"name": "web", "image": "nginx:1.28"}]}}}}
    d = http.patch(f"{url}/pt", json=smp, headers={"content-type": "application/strategic-merge-patch+json"}).json()
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "nginx:1.28" and c["ports"][0]["containerPort"] == 80 and c["env"][0]["name"] == "A"
    assert d["metadata"]["labels"] == {"tier": "web"}
    jp = [{"op": "replace", "path": "/spec/replicas", "value": 5},
          {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}]
    d = http.patch(f"{url}/pt", json=jp, headers={"content-type": "application/json-patch+json"}).json()
    assert d["spec"]["replicas"] == 5 and d["metadata"]["annotations"] == {"x": "y"}
    bad = [{"op": "test", "path": "/spec/replicas", "value": 1}]
    r = http.patch(f"{url}/pt", json=bad, headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 422
    assert http.get(f"{url}/pt").json()["spec"]["replicas"] == 5


def test_dry_run_stores_nothing(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/pods?dryRun=All", json=pod("dry"))
    assert r.status_code == 201 and r.json()["spec"]["restartPolicy"] == "Always"
    assert http.get(f"/api/v1/namespaces/{ns}/pods/dry").status_code == 404
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("dry"))
    r = http.patch(f"/api/v1/namespaces/{ns}/pods/dry?dryRun=All", json={"metadata": {"labels": {"a": "b"}}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.json()["metadata"]["labels"] == {"a": "b"}
    assert http.get(f"/api/v1/namespaces/{ns}/pods/dry").json()["metadata"].get("labels") == {}
    assert http.delete(f"/api/v1/namespaces/{ns}/pods/dry?dryRun=All").status_code == 200
    assert http.get(f"/api/v1/namespaces/{ns}/pods/dry").status_code == 200


def test_graceful_pod_deletion_waits_for_node(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("g", node="n1"))
    r = http.delete(f"/api/v1/namespaces/{ns}/pods/g")
    assert r.status_code == 200  # held for its grace period, as kube-apiserver answers
    p = http.get(f"/api/v1/namespaces/{ns}/pods/g").json()
    assert p["metadata"]["deletionTimestamp"] and p["metadata"]["deletionGracePeriodSeconds"] == 30
    # The node confirms with grace 0.
    r = http.request("DELETE", f"/api/v1/namespaces/{ns}/pods/g", json={"gracePeriodSeconds": 0})
    assert r.status_code == 200
    assert http.get(f"/api/v1/namespaces/{ns}/pods/g").status_code == 404
    # An unscheduled pod goes at once.
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("u"))
    assert http.delete(f"/api/v1/namespaces/{ns}/pods/u").status_code == 200
    assert http.get(f"/api/v1/namespaces/{ns}/pods/u").status_code == 404


def test_finalizers_hold_objects_until_removed(http, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    http.post(url, json={"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})
    assert http.delete(f"{url}/f").status_code == 200
    held = http.get(f"{url}/f").json()
    assert held["metadata"]["deletionTimestamp"]
    r = http.patch(f"{url}/f", json={"metadata": {"finalizers": None}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200
    assert http.get(f"{url}/f").status_code == 404


def test_delete_held_for_its_dependents_answers_202_only_when_orphan_dependents_is_false(http, ns):
    """handlers/delete.go: 202 only when the object stays and the request set the
    deprecated orphanDependents to false; a held object is 200 otherwise."""
    url = f"/api/v1/namespaces/{ns}/configmaps"
    for name in ("body", "query", "orphan"):
        http.post(url, json={"metadata": {"name": name, "finalizers": ["example.com/hold"]}})
    r = http.request("DELETE", f"{url}/body", json={"orphanDependents": False})
    assert r.status_code == 202 and r.json()["metadata"]["deletionTimestamp"]
    assert http.delete(f"{url}/query?orphanDependents=false").status_code == 202
    assert http.delete(f"{url}/orphan?orphanDependents=true").status_code == 200
    r = http.delete(f"{url}/orphan?orphanDependents=maybe")
    assert r.status_code == 400 and r.json()["kind"] == "Status"
    # A delete that removes the object at once is 200 whatever it asked for.
    http.post(url, json={"metadata": {"name": "free"}})
    assert http.delete(f"{url}/free?orphanDependents=false").status_code == 200
    assert http.get(f"{url}/free").status_code == 404


def test_propagation_policy_recorded_as_finalizers(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/deployments"
    http.post(url, json=deployment("fg"))
    http.post(url, json=deployment("or"))
    http.request("DELETE", f"{url}/fg", json={"propagationPolicy": "Foreground"})
    http.request("DELETE", f"{url}/or", json={"propagationPolicy": "Orphan"})
    assert http.get(f"{url}/fg").json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert http.get(f"{url}/or").json()["metadata"]["finalizers"] == ["orphan"]
    http.post(url, json=deployment("bg"))
    assert http.request("DELETE", f"{url}/bg", json={"propagationPolicy": "Background"}).status_code == 200
    assert http.get(f"{url}/bg").status_code == 404


def test_delete_collection_with_selector(http, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(4):
        http.post(url, json={"metadata": {"name": f"c{i}", "labels": {"grp": "a" if i < 3 else "b"}}})
    r = http.delete(url, params={"labelSelector": "grp=a"})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    left = [c["metadata"]["name"] for c in http.get(url).json()["items"]]
    assert left == ["c3"]


def test_lost_update_50_concurrent_writers(apiserver, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    with apiserver.client() as c:
        c.post(url, json={"metadata": {"name": "counter", "annotations": {"n": "0"}}})

    def increment(_):
        with apiserver.client(timeout=30) as c:
            for _ in range(200):
                cm = c.get(f"{url}/counter").json()
                cm["metadata"]["annotations"]["n"] = str(int(cm["metadata"]["annotations"]["n"]) + 1)
                r = c.put(f"{url}/counter", json=cm)
                if r.status_code == 200:
                    return 1
                assert r.status_code == 409, r.text
        raise AssertionError("writer never succeeded")

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        assert sum(pool.map(increment, range(50))) == 50
    with apiserver.client() as c:
        assert c.get(f"{url}/counter").json()["metadata"]["annotations"]["n"] == "50"


def test_concurrent_patches_without_resource_version_all_apply(apiserver, ns):
    """A patch that does not name a resourceVersion is re-applied on conflict, never 409."""
    url = f"/api/v1/namespaces/{ns}/configmaps"
    with apiserver.client() as c:
        c.post(url, json={"metadata": {"name": "many"}})

    writers = 50
    start = threading.Barrier(writers)

    def patch(i):
        with apiserver.client(timeout=30) as c:
            c.get("/readyz")  # connected before the start, so all patch at once
            start.wait()
            r = c.patch(f"{url}/many", json={"data": {f"k{i}": "v"}},
                        headers={"content-type": "application/merge-patch+json"})
            return r.status_code

    with concurrent.futures.ThreadPoolExecutor(writers) as pool:
        codes = list(pool.map(patch, range(writers)))
    assert codes == [200] * writers
    with apiserver.client() as c:
        assert len(c.get(f"{url}/many").json()["data"]) == writers


def test_concurrent_unconditional_updates_all_apply(apiserver, ns):
    """A PUT without a resourceVersion is an unconditional update: like Kubernetes'
    GuaranteedUpdate, the server retries it on the new state rather than answer 409."""
    url = f"/api/v1/namespaces/{ns}/configmaps"
    with apiserver.client() as c:
        c.post(url, json={"metadata": {"name": "last"}})

    writers = 30
    start = threading.Barrier(writers)

    def put(i):
        with apiserver.client(timeout=30) as c:
            c.get("/readyz")
            start.wait()
            return c.put(f"{url}/last", json={"metadata": {"name": "last"}, "data": {"w": str(i)}}).status_code

    with concurrent.futures.ThreadPoolExecutor(writers) as pool:
        codes = list(pool.map(put, range(writers)))
    assert codes == [200] * writers
    with apiserver.client() as c:
        assert c.get(f"{url}/last").json()["data"]["w"] in {str(i) for i in range(writers)}


def test_patch_with_stale_resource_version_conflicts(http, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    cm = http.post(url, json={"metadata": {"name": "pin"}}).json()
    http.patch(f"{url}/pin", json={"data": {"a": "1"}}, headers={"content-type": "application/merge-patch+json"})
    r = http.patch(f"{url}/pin", json={"metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]},
                                       "data": {"a": "2"}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 409


def test_eviction_deletes_the_pod(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("ev", node="n1"))
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "ev", "namespace": ns},
            "deleteOptions": {"gracePeriodSeconds": 0}}
    r = http.post(f"/api/v1/namespaces/{ns}/pods/ev/eviction", json=body)
    assert r.status_code == 201, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/pods/ev").status_code == 404
    r = http.post(f"/api/v1/namespaces/{ns}/pods/ev/eviction", json=body)
    assert r.status_code == 404


def test_patch_with_another_uid_is_a_conflict(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/deployments"
    http.post(url, json=deployment("uidp"))
    r = http.patch(f"{url}/uidp", json={"metadata": {"uid": "not-the-uid", "labels": {"x": "y"}}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 409
    assert r.json()["message"].startswith('Operation cannot be fulfilled on deployments.apps "uidp"')
    assert "x" not in http.get(f"{url}/uidp").json()["metadata"]["labels"]


def test_binding_for_another_uid_is_a_conflict(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("bu"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bu", "uid": "stale"},
               "target": {"kind": "Node", "name": "node-1"}}
    assert http.post(f"/api/v1/namespaces/{ns}/pods/bu/binding", json=binding).status_code == 409
    assert "nodeName" not in http.get(f"/api/v1/namespaces/{ns}/pods/bu").json()["spec"]
