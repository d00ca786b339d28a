"""kubectl-lite's pure parts, in-process: the tabwriter port, JSONPath templates, manifest
reading and validation, the merge patch for kinds without strategies, rollout status
messages. (Everything that talks to a server is tested as a subprocess elsewhere.)"""
from __future__ import annotations

import pytest

from kubectl_lite.apply import modified_configuration, three_way_patch
from kubectl_lite.common import CLIError, split_type_name
from kubectl_lite.jsonpath import Template, relaxed
from kubectl_lite.manifests import Validator, parse_text
from kubectl_lite.printers import go_format, human_duration, tabwrite
from kubectl_lite.rollout import status_message


def test_tabwrite_pads_cells_but_not_the_last_and_aligns_runs_of_lines():
    assert tabwrite(["NAME\tREADY\tAGE", "a\t0/1\t5s", "longer-name\t1/1\t3m"]) == [
        "NAME          READY   AGE", "a             0/1     5s", "longer-name   1/1     3m"]
    assert tabwrite(["A\tB", "x\ty"]) == ["A     B", "x     y"]  # minwidth 6
    # describe's layout: a line without a tab ends a column block
    assert tabwrite(["Name:\tp", "Service Account:\tdefault", "Containers:", "  c:", "    Image:\tbusybox"],
                    minwidth=0, padding=2) == [
        "Name:             p", "Service Account:  default", "Containers:", "  c:", "    Image:  busybox"]
    assert tabwrite(["Labels:\ta=b", "\tc=d"], minwidth=0, padding=2) == ["Labels:  a=b", "         c=d"]


@pytest.mark.parametrize("template, want", [
    ("{.metadata.name}", "p"),
    ("{.spec.containers[*].name}", "a b"),
    ("{.spec.containers[-1].name}", "b"),
    ("{.spec.containers[0:1].image}", "img-a"),
    ('{.spec.containers[?(@.name=="b")].image}', "img-b"),
    ("{.spec.containers[?(@.ports)].name}", "a"),
    ("{.spec.containers[?(@.ports[0].containerPort>=80)].name}", "a"),
    ("{..containerPort}", "80"),
    ("{.metadata.labels}", '{"app":"web","k8s.io/x":"y"}'),
    ("{.metadata.labels.k8s\\.io/x}", "y"),
    ("{.metadata.labels['app']}", "web"),
    ('{range .spec.containers[*]}{.name}={.image}{"\\n"}{end}', "a=img-a\nb=img-b\n"),
    ("name: {.metadata.name}, missing: {.nope.nope}.", "name: p, missing: ."),
    ("{.spec.replicas} {.spec.paused}", "3 false"),
])
def test_jsonpath_templates(template, want):
    obj = {"metadata": {"name": "p", "labels": {"app": "web", "k8s.io/x": "y"}},
           "spec": {"replicas": 3, "paused": False,
                    "containers": [{"name": "a", "image": "img-a", "ports": [{"containerPort": 80}]},
                                   {"name": "b", "image": "img-b"}]}}
    assert Template(template).render(obj) == want


def test_jsonpath_errors_and_relaxed_expressions():
    for bad in ("{.a[}", "{range .a}", "{end}", "{.a b}"):
        with pytest.raises(CLIError, match="error parsing jsonpath"):
            Template(bad)
    assert relaxed("metadata.name") == relaxed(".metadata.name") == relaxed("{.metadata.name}") == \
        "{.metadata.name}"
    assert go_format({"b": [1, True], "a": None}) == "map[a:<nil> b:[1 true]]"
    assert [human_duration(s) for s in (5, 150, 3600 * 5 + 60, 86400 * 3)] == ["5s", "2m30s", "5h1m", "3d"]


def test_manifests_expand_lists_number_documents_and_keep_timestamps_as_text():
    docs = parse_text("---\n---\napiVersion: v1\nkind: List\nitems:\n- {kind: ConfigMap, apiVersion: v1,"
                      " metadata: {name: a, creationTimestamp: 2024-01-01T00:00:00Z}}\n- {kind: ConfigMap,"
                      " apiVersion: v1, metadata: {name: b}}\n---\nkind: Pod\n", "f.yaml")
    assert [(d.obj.get("metadata", {}).get("name"), d.index) for d in docs] == [("a", 2), ("b", 2), (None, 3)]
    assert docs[0].obj["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"
    assert parse_text('{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "j"}}', "j.json")[0].index == 1
    with pytest.raises(CLIError, match='error parsing "x.yaml": document 1 is not an object'):
        parse_text("- a\n- b\n", "x.yaml")


def test_validation_names_every_problem_with_its_field_path():
    v = Validator()
    assert v.problems({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": {"containers": [{"name": "c", "image": "i"}]}}) == []
    problems = v.problems({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                           "spec": {"replicas": "3", "selector": {}, "extra": 1,
                                    "template": {"spec": {"containers": [{"ports": [
                                        {"containerPort": 80}]}]}}}})
    assert 'spec.extra: unknown field "spec.extra"' in problems
    assert 'spec.replicas: Invalid value: "3": must be of type integer' in problems
    assert "spec.template.spec.containers[0].name: Required value" in problems
    assert v.problems({"kind": "Pod"}) == ["apiVersion: Required value: apiVersion not set"]
    assert v.problems({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []}}) == [
        "metadata.name: Required value: name or generateName is required"]


def test_merge_patch_for_kinds_without_strategies():
    class Widget:  # a custom kind: Kubernetes has no patch strategies for it
        kind, group = "Widget", "example.com"
    original = {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 10}}
    modified = {"spec": {"holderIdentity": "b"}}
    current = {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 10, "renewTime": "t"}}
    patch, kind = three_way_patch(original, modified, current, Widget)
    assert kind == "merge"
    assert patch == {"spec": {"holderIdentity": "b", "leaseDurationSeconds": None}}  # renewTime: others'
    modified, text = modified_configuration({"kind": "X", "metadata": {"name": "n", "annotations": {
        "a": "<&>", "kubectl.kubernetes.io/last-applied-configuration": "old"}}})
    assert text == '{"kind":"X","metadata":{"annotations":{"a":"\\u003c\\u0026\\u003e"},"name":"n"}}\n'
    assert modified["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == text


def test_rollout_status_messages_follow_kubectl():
    def d(gen=2, observed=2, want=3, **st):
        return {"metadata": {"name": "web", "generation": gen},
                "spec": {"replicas": want}, "status": {"observedGeneration": observed, **st}}
    assert status_message(d(observed=1)) == ("Waiting for deployment spec update to be observed...", False)
    assert status_message(d(updatedReplicas=1))[0].endswith("1 out of 3 new replicas have been updated...")
    assert status_message(d(updatedReplicas=3, replicas=5))[0].endswith(
        "2 old replicas are pending termination...")
    assert status_message(d(updatedReplicas=3, replicas=3, availableReplicas=2))[0].endswith(
        "2 of 3 updated replicas are available...")
    assert status_message(d(updatedReplicas=3, replicas=3, availableReplicas=3)) == (
        'deployment "web" successfully rolled out', True)
    with pytest.raises(CLIError, match="exceeded its progress deadline"):
        status_message(d(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]))


def test_resource_arguments():
    assert split_type_name(["pods"]) == [("pods", [])]
    assert split_type_name(["po,svc", "x"]) == [("po", ["x"]), ("svc", ["x"])]
    assert split_type_name(["pod/a", "pod/b", "svc/c"]) == [("pod", ["a", "b"]), ("svc", ["c"])]
    with pytest.raises(CLIError, match="no need to specify a resource type as a separate argument"):
        split_type_name(["pods", "pod/a"])
