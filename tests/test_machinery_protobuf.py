"""Protobuf request bodies decode into the dict their JSON form would be.

Wire bytes are built by hand (tests/util.py `pb`), field numbers read off k8s.io/api's
struct tags, so these tests check the decoder against the wire format, not against the
generated table.
"""
from __future__ import annotations

import pytest

from apiserver import registry
from machinery import errors, protobuf
from machinery.protobuf_fields import KINDS, MESSAGES
from tests.util import pb, pb_body, pb_varint

# `kubectl create namespace foo`, as kubectl 1.32 sent it (its -v=8 dump).
KUBECTL_CREATE_NS = bytes.fromhex(
    "6b387300 0a0f0a02 76311209 4e616d65 73706163 65121b0a 130a0366 6f6f1200 1a002200"
    "2a003200 38004200 12001a02 0a001a00 2200".replace(" ", ""))


def meta(name: str = "x", **more: bytes) -> bytes:
    # ObjectMeta as go-to-protobuf writes it: every non-pointer field, zero or not.
    return pb(1, pb(1, name) + pb(2, "") + pb(3, "") + pb(4, "") + pb(5, "") + pb(6, "")
              + pb(7, 0) + pb(8, b"") + b"".join(more.values()))


def test_kubectls_create_namespace_body():
    assert protobuf.decode(KUBECTL_CREATE_NS) == {
        "kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "foo"},
        "spec": {}, "status": {}}


def test_a_pointer_zero_is_kept_and_a_non_pointer_omitempty_zero_dropped():
    template = pb(3, pb(1, pb(8, b"") + pb(11, pb(1, "app") + pb(2, "web")))
                  + pb(2, pb(2, pb(1, "web") + pb(2, "nginx")) + pb(3, "")))
    body = pb_body("apps/v1", "Deployment", meta("web"),
                   pb(2, pb(1, 0) + pb(2, pb(1, pb(1, "app") + pb(2, "web"))) + template
                      + pb(4, b"") + pb(5, 0) + pb(7, False)),
                   pb(3, pb(1, 0) + pb(2, 0)))
    got = protobuf.decode(body)
    assert got["spec"] == {
        "replicas": 0,                      # *int32: set, so kept
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},   # zero Time is omitzero
                     "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
        "strategy": {},                     # a struct is never omitted
    }                                       # minReadySeconds 0, paused false: omitempty
    assert got["status"] == {}
    assert got["metadata"] == {"name": "web"}
    assert list(got) == ["kind", "apiVersion", "metadata", "spec", "status"]


def test_a_non_omitempty_zero_is_kept():
    # ContainerPort.containerPort has no omitempty; ServicePort.port neither.
    body = pb_body("v1", "Service", meta("s"),
                   pb(2, pb(1, pb(1, "") + pb(2, "TCP") + pb(3, 0) + pb(4, pb(1, 0) + pb(2, 0)))))
    assert protobuf.decode(body)["spec"] == {
        "ports": [{"protocol": "TCP", "port": 0, "targetPort": 0}]}


def test_secret_bytes_are_base64_and_maps_are_entries():
    body = pb_body("v1", "Secret", meta("s"),
                   pb(2, pb(1, "pw") + pb(2, b"s3cr:et")), pb(2, pb(1, "bin") + pb(2, b"\x00\xff")),
                   pb(4, pb(1, "plain") + pb(2, "text")), pb(3, "Opaque"), pb(5, False))
    got = protobuf.decode(body)
    assert got["data"] == {"pw": "czNjcjpldA==", "bin": "AP8="}
    assert got["stringData"] == {"plain": "text"}
    assert got["type"] == "Opaque"
    assert got["immutable"] is False        # *bool set to false
    assert list(got)[2:] == ["metadata", "immutable", "data", "stringData", "type"]


def test_int_or_string_quantity_and_times():
    def port(t, i, s):
        return pb(1, pb(3, 80) + pb(4, pb(1, t) + pb(2, i) + pb(3, s)))
    svc = protobuf.decode(pb_body("v1", "Service", meta("s"),
                                  pb(2, port(0, 8080, "") + port(1, 0, "http"))))
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == [8080, "http"]

    resources = pb(8, pb(1, pb(1, "cpu") + pb(2, pb(1, "500m")))
                   + pb(2, pb(1, "memory") + pb(2, pb(1, "128Mi"))))
    deletion = pb(9, pb(1, 1795766000) + pb(2, 123456789))
    pod = protobuf.decode(pb_body("v1", "Pod", meta("p", deletion=deletion),
                                  pb(2, pb(2, pb(1, "c") + resources))))
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m"}, "requests": {"memory": "128Mi"}}
    assert pod["metadata"]["deletionTimestamp"] == "2026-11-27T07:53:20Z"

    lease = protobuf.decode(pb_body("coordination.k8s.io/v1", "Lease", meta("l"),
                                    pb(2, pb(1, "me") + pb(2, 15)
                                       + pb(4, pb(1, 1795766000) + pb(2, 123456789)))))
    assert lease["spec"] == {"holderIdentity": "me", "leaseDurationSeconds": 15,
                             "renewTime": "2026-11-27T07:53:20.123456Z"}


def test_a_zero_time_that_is_not_omitzero_is_null():
    cond = pb(1, "Ready") + pb(2, "True") + pb(3, b"") + pb(4, pb(1, 1795766000))
    got = protobuf.decode(pb_body("v1", "Pod", meta("p"), pb(3, pb(2, cond))))
    assert got["status"]["conditions"] == [{"type": "Ready", "status": "True",
                                            "lastProbeTime": None,
                                            "lastTransitionTime": "2026-11-27T07:53:20Z"}]


def test_embedded_structs_are_inlined():
    # Volume embeds VolumeSource; ConfigMapVolumeSource embeds LocalObjectReference.
    volume = pb(1, "cfg") + pb(2, pb(19, pb(1, pb(1, "my-cm")) + pb(3, 0o644)))
    got = protobuf.decode(pb_body("v1", "Pod", meta("p"), pb(2, pb(1, volume))))
    assert got["spec"]["volumes"] == [{"name": "cfg", "configMap": {"name": "my-cm",
                                                                   "defaultMode": 0o644}}]


def test_negative_ints_packed_and_unpacked_repeated_varints():
    ctx = pb(4, 1) + pb(4, 2) + pb(4, b"".join(map(pb_varint, (3, 4)))) + pb(2, -1)
    got = protobuf.decode(pb_body("v1", "Pod", meta("p"), pb(2, pb(14, ctx))))
    assert got["spec"]["securityContext"] == {"runAsUser": -1, "supplementalGroups": [1, 2, 3, 4]}


def test_fields_unknown_to_the_table_are_skipped():
    body = pb_body("v1", "ConfigMap", meta("c"), pb(99, "from the future"), pb(98, 7),
                   pb(2, pb(1, "a") + pb(2, "b")))
    assert protobuf.decode(body) == {"kind": "ConfigMap", "apiVersion": "v1",
                                     "metadata": {"name": "c"}, "data": {"a": "b"}}


def test_options_kinds_decode_under_any_group_version():
    # kubectl drain, with no eviction support, deletes with DeleteOptions in the pods' group.
    opts = protobuf.decode(pb_body("v1", "DeleteOptions", pb(1, 0), pb(4, "Foreground")))
    assert opts == {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                    "propagationPolicy": "Foreground"}
    assert protobuf.decode(pb_body("apps/v1", "DeleteOptions"))["kind"] == "DeleteOptions"


def test_eviction_and_binding():
    ev = protobuf.decode(pb_body("policy/v1", "Eviction", meta("p"), pb(2, pb(1, 5))))
    assert ev["deleteOptions"] == {"gracePeriodSeconds": 5}
    b = protobuf.decode(pb_body("v1", "Binding", meta("p"), pb(2, pb(1, "Node") + pb(3, "n1"))))
    assert b["target"] == {"kind": "Node", "name": "n1"}


@pytest.mark.parametrize("name,body,says", [
    ("no magic", b"\x0a\x00", "magic"),
    ("truncated varint", pb_body("v1", "ConfigMap") + b"\x80", "truncated varint"),
    ("length past the end", b"k8s\x00" + b"\x12\x05ab", "past the end"),
    ("varint over ten bytes", pb_body("v1", "ConfigMap", b"\x08" + b"\xff" * 11), "longer than 10"),
    ("wrong wire type", pb_body("v1", "ConfigMap", pb(1, 5)), "metadata: wire type varint"),
    ("group wire type", pb_body("v1", "ConfigMap", b"\x0b"), "wire type 3"),
    ("string not utf-8", pb_body("v1", "ConfigMap", pb(1, pb(1, b"\xff\xfe"))), "metadata.name"),
    ("field number zero", pb_body("v1", "ConfigMap", b"\x00\x00"), "field number 0"),
    ("no typeMeta", b"k8s\x00" + pb(2, b""), "no apiVersion and kind"),
    ("content encoding", pb_body("v1", "ConfigMap") + pb(3, "gzip"), "content encoding"),
    ("deep path", pb_body("apps/v1", "Deployment", pb(2, pb(3, pb(2, pb(2, pb(2, 7)))))),
     "spec.template.spec.containers[0].image"),
])
def test_malformed_bytes_are_bad_request(name, body, says):
    with pytest.raises(errors.BadRequest) as exc:
        protobuf.decode(body)
    assert says in exc.value.message


def test_an_unknown_kind_is_unsupported_media_type_naming_it():
    with pytest.raises(errors.UnsupportedMediaType, match="Widget \\(example.com/v1\\)"):
        protobuf.decode(pb_body("example.com/v1", "Widget", meta("c")))


def test_every_served_kind_has_a_message():
    for r in registry.RESOURCES:
        if r.group == "apiextensions.k8s.io":
            continue  # not in k8s.io/api (hack/gen_protobuf.py's source): JSON only
        assert f"{r.api_version}/{r.kind}" in KINDS, r.kind
    for message, fields in MESSAGES.items():
        for _number, _json, type_, _flags in fields:
            name = type_.removeprefix("[]").split("]")[-1]
            assert name in MESSAGES or name.startswith("@") or name in (
                "string", "bytes", "bool", "int", "uint"), (message, type_)
