"""machinery.yamlutil reads YAML as Kubernetes does (sigs.k8s.io/yaml over go-yaml v2),
and the API server and kubectl-lite both use it: an unquoted timestamp in a ConfigMap
or an annotation is stored as the string written."""
from __future__ import annotations

import pytest
import yaml

from machinery import yamlutil
from tests.test_kubectl_lite import kl  # noqa: F401 - the fixture

# (YAML scalar, the JSON value go-yaml v2 + sigs.k8s.io/yaml give for it)
SCALARS = [
    ("2024-01-01 10:00:00", "2024-01-01 10:00:00"),  # PyYAML: a datetime
    ("2024-01-01", "2024-01-01"),  # PyYAML: a date
    ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
    ("y", True), ("Y", True), ("yes", True), ("On", True), ("TRUE", True),
    ("n", False), ("NO", False), ("off", False), ("False", False),
    ("yep", "yep"), ("~", None), ("null", None), ("", None),
    ("42", 42), ("-7", -7), ("+7", 7), ("1_000", 1000), ("0x1F", 31), ("0o17", 15),
    ("017", 15), ("0b101", 5), ("-0b101", -5),
    ("09", 9.0),  # no octal, so a float
    ("1:20", "1:20"),  # PyYAML: base 60, 80
    ("1e3", 1000.0), ("1.0e3", 1000.0),  # PyYAML: strings
    ("1.5", 1.5), (".5", 0.5), ("-.5", -0.5), ("1.", 1.0),
    ("18446744073709551615", 18446744073709551615),  # uint64
    ("18446744073709551616", 18446744073709551616.0),  # past it: a float
    ("1.2.3", "1.2.3"), ("0x", "0x"), ("=", "="), ("v1.32", "v1.32"), ("10Mi", "10Mi"),
    ('"2024-01-01"', "2024-01-01"), ("'yes'", "yes"), ('"1"', "1"),
    ("!!binary aGVsbG8=", "hello"), ("!!str 1", "1"),
]


@pytest.mark.parametrize("text,want", SCALARS)
def test_scalars_mean_what_they_mean_to_kubernetes(text, want):
    got = yamlutil.load(f"v: {text}\n")["v"]
    assert got == want and type(got) is type(want), got


def test_keys_become_strings_and_merge_keys_merge():
    doc = yamlutil.load("1: a\ntrue: b\n1.5: c\n1e6: d\n"
                        "base: &b {x: 1}\nm:\n  <<: *b\n  z: 2\n")
    assert doc == {"1": "a", "true": "b", "1.5": "c", "1e+06": "d",
                   "base": {"x": 1}, "m": {"x": 1, "z": 2}}


def test_documents():
    assert list(yamlutil.load_all("a: 1\n---\n---\nb: 2\n")) == [{"a": 1}, None, {"b": 2}]
    assert yamlutil.load("a: 1\n---\nb: 2\n") == {"a": 1}  # the server reads the first
    assert yamlutil.load("") is None
    assert yamlutil.load(b"a: 1\n") == {"a": 1}


@pytest.mark.parametrize("text,message", [
    ("v: .nan\n", "unsupported value: .nan"),
    ("v: -.inf\n", "unsupported value: -.inf"),
    ("? ~\n: 1\n", "unsupported map key"),
    ("v: &a [*a]\n", "contains itself"),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
     "excessive aliasing"),
    ("v: [1\n", "expected ',' or ']'"),
    ("? [a]\n: 1\n", "unhashable key"),
])
def test_what_json_cannot_hold_is_a_yaml_error(text, message):
    with pytest.raises(yaml.YAMLError) as exc:
        yamlutil.load(text)
    assert message in str(exc.value)


CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  annotations:
    when: 2024-01-01 10:00:00
data:
  when: 2024-01-01 10:00:00
  day: 2024-01-01
"""


def test_api_server_keeps_an_unquoted_timestamp_a_string(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                  content=CONFIGMAP.format(name="ts").encode(),
                  headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    cm = http.get(f"/api/v1/namespaces/{ns}/configmaps/ts").json()
    assert cm["data"] == {"when": "2024-01-01 10:00:00", "day": "2024-01-01"}
    assert cm["metadata"]["annotations"] == {"when": "2024-01-01 10:00:00"}


def test_api_server_answers_yaml_json_cannot_hold_with_400(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                  content=b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nan}\ndata: {a: .nan}\n",
                  headers={"Content-Type": "application/yaml"})
    assert r.status_code == 400 and r.json()["kind"] == "Status", r.text
    assert "unsupported value" in r.json()["message"]
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/nan").status_code == 404


def test_kubectl_lite_apply_keeps_an_unquoted_timestamp_a_string(kl, http, ns, tmp_path):  # noqa: F811
    path = tmp_path / "cm.yaml"
    path.write_text(CONFIGMAP.format(name="ts-lite"))
    kl("apply", "-f", str(path))
    cm = http.get(f"/api/v1/namespaces/{ns}/configmaps/ts-lite").json()
    assert cm["data"] == {"when": "2024-01-01 10:00:00", "day": "2024-01-01"}
    assert cm["metadata"]["annotations"]["when"] == "2024-01-01 10:00:00"
    assert "unchanged" in kl.out("apply", "-f", str(path))


def test_a_float_key_beyond_float32_is_infinity_as_go_spells_it():
    # sigs.k8s.io/yaml formats float keys at 32 bits: 1e300 becomes +Inf (a 500 once, found by
    # schemathesis); the largest float32 still reads as itself.
    assert yamlutil.load("{1e300: a, -1e39: b, 3.4028235e38: c}") == {"+Inf": "a", "-Inf": "b", "3.4028235e+38": "c"}
