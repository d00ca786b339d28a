"""Per-kind strategies (apiserver/strategies/) as tables: pure functions of objects, no
server. The same behaviour is covered end to end by test_api_crud.py."""
import pytest

from apiserver.registry import by_plural
from machinery import errors

PODS, NAMESPACES, DEPLOYMENTS, CONFIGMAPS, NODES = (
    by_plural(p).strategy for p in ("pods", "namespaces", "deployments", "configmaps", "nodes"))


def pod(*, node="", phase="", grace=None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "x"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": "p", "uid": "u1"}, "spec": spec, "status": {"phase": phase}}


@pytest.mark.parametrize("name, obj, requested, want", [
    ("bound pod: its own grace period", pod(node="n", grace=12), None, 12),
    ("bound pod: the default 30 s", pod(node="n"), None, 30),
    ("bound pod: the request wins", pod(node="n", grace=12), 3, 3),
    ("unscheduled pod: nobody to wait for", pod(grace=12), 5, 0),
    ("finished pod: nothing to stop", pod(node="n", phase="Succeeded"), 5, 0),
    ("failed pod: nothing to stop", pod(node="n", phase="Failed"), None, 0),
])
def test_pod_grace_period(name, obj, requested, want):
    assert PODS.grace_period(obj, requested) == want


def test_plain_kinds_are_not_graceful():
    assert CONFIGMAPS.grace_period({"metadata": {}}, 30) == 0
    assert not CONFIGMAPS.graceful and PODS.graceful


def test_create_resets_status_where_only_status_may_set_it():
    for strategy, keeps in ((PODS, False), (DEPLOYMENTS, False), (NODES, True), (CONFIGMAPS, True)):
        obj = {"metadata": {"generation": 7}, "status": {"x": 1}}
        strategy.prepare_for_create(obj)
        assert ("status" in obj) == keeps, strategy
    obj = {"metadata": {}}
    DEPLOYMENTS.prepare_for_create(obj)
    assert obj["metadata"]["generation"] == 1
    obj = {"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}}
    NAMESPACES.prepare_for_create(obj)
    assert obj["status"] == {"phase": "Active"}


def test_update_keeps_status_and_counts_spec_changes():
    old = {"metadata": {"generation": 2}, "spec": {"replicas": 1}, "status": {"replicas": 1}}
    same = {"metadata": {"generation": 2}, "spec": {"replicas": 1}, "status": {"replicas": 9}}
    DEPLOYMENTS.prepare_for_update(same, old)
    assert same["status"] == {"replicas": 1} and same["metadata"]["generation"] == 2
    changed = {"metadata": {"generation": 2}, "spec": {"replicas": 3}}
    DEPLOYMENTS.prepare_for_update(changed, old)
    assert changed["status"] == {"replicas": 1} and changed["metadata"]["generation"] == 3


def test_status_update_takes_status_and_only_the_metadata_the_kind_lets_through():
    old = {"metadata": {"name": "d", "labels": {"a": "1"}, "annotations": {"x": "1"}},
           "spec": {"replicas": 1}}
    new = {"metadata": {"name": "d", "labels": {"a": "2"}, "annotations": {"x": "2"}},
           "spec": {"replicas": 5}, "status": {"replicas": 4}}
    got = DEPLOYMENTS.prepare_for_status_update(new, old)
    assert got["spec"] == {"replicas": 1} and got["status"] == {"replicas": 4}
    assert got["metadata"]["labels"] == {"a": "1"}  # kept: Deployment's status strategy
    assert got["metadata"]["annotations"] == {"x": "2"}


def test_namespace_deletion_waits_for_its_finalizers():
    ns = {"metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
    assert NAMESPACES.before_delete(ns)
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    assert not NAMESPACES.deletion_finished(ns)
    ns["spec"]["finalizers"] = []
    assert NAMESPACES.deletion_finished(ns)
    assert not NAMESPACES.before_delete({"metadata": {"name": "m"}, "spec": {}})


@pytest.mark.parametrize("name, obj, binding, why", [
    ("already bound", pod(node="n1"), {"target": {"name": "n2"}}, 'already assigned to node "n1"'),
    ("another pod's binding", pod(), {"metadata": {"uid": "u0"}, "target": {"name": "n2"}},
     "UID in precondition: u0"),
    ("being deleted", {**pod(), "metadata": {"name": "p", "deletionTimestamp": "t"}},
     {"target": {"name": "n2"}}, "being deleted"),
])
def test_binding_refuses(name, obj, binding, why):
    with pytest.raises(errors.Conflict, match=why):
        PODS.bind(obj, binding, now="2026-01-01T00:00:00Z")


def test_binding_assigns_the_node_and_marks_the_pod_scheduled():
    got = PODS.bind(pod(), {"target": {"name": "n1"}}, now="2026-01-01T00:00:00Z")
    assert got["spec"]["nodeName"] == "n1"
    assert got["status"]["conditions"] == [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]


SA_WITH_SECRETS = {"metadata": {"name": "builder"}, "imagePullSecrets": [{"name": "regcred"}, {"name": "other"}]}


@pytest.mark.parametrize("name, spec, annotations, sa, want", [
    ("the SA's secrets are copied", {"serviceAccountName": "builder"}, {}, SA_WITH_SECRETS,
     [{"name": "regcred"}, {"name": "other"}]),
    ("the pod's own list wins", {"serviceAccountName": "builder", "imagePullSecrets": [{"name": "mine"}]},
     {}, SA_WITH_SECRETS, [{"name": "mine"}]),
    ("an SA without secrets adds none", {"serviceAccountName": "builder"}, {}, {"metadata": {}}, None),
    ("a mirror pod is left alone", {"serviceAccountName": "builder"}, {"kubernetes.io/config.mirror": "x"},
     SA_WITH_SECRETS, None),
])
def test_service_account_admission_copies_image_pull_secrets(name, spec, annotations, sa, want):
    obj = {"metadata": {"name": "p", "annotations": annotations}, "spec": dict(spec)}
    refs = PODS.admission_refs(obj)
    PODS.admit_create(obj, {ref: sa for ref in refs}, name="p")
    assert obj["spec"].get("imagePullSecrets") == want


def test_service_account_admission_refuses_a_pod_whose_service_account_is_missing():
    obj = {"metadata": {"generateName": "p-", "namespace": "team"}, "spec": {"serviceAccountName": "builder"}}
    with pytest.raises(errors.Forbidden) as err:
        PODS.admit_create(obj, {ref: None for ref in PODS.admission_refs(obj)}, name="p-")
    assert str(err.value) == ('pods "p-" is forbidden: error looking up service account team/builder: '
                              'serviceaccount "builder" not found')
    assert "volumes" not in obj["spec"]
    assert PODS.admission_attempts(("serviceaccounts", "default")) == 10  # the controller makes it soon
    assert PODS.admission_attempts(("serviceaccounts", "builder")) == 1
