"""Property-based fuzzing of every parser a user's text reaches (issue 19), with hypothesis.

Each parser either succeeds or raises its documented error type, never anything else,
and its round trips hold. The runs are derandomized and bounded (`EXAMPLES` per target),
so CI sees the same examples every time; `MINIK8S_FUZZ_EXAMPLES` raises the bound for a
longer local hunt. Pure: no server, no I/O beyond what a parser itself does.
"""
from __future__ import annotations

import copy
import os
import string
from fractions import Fraction

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apiserver import apply as ssa
from apiserver import registry
from client import kubeconfig
from kubectl_lite.common import CLIError
from kubectl_lite.jsonpath import JSONPathError, Template
from machinery import errors, fields, labels, patch, protobuf, yamlutil
from machinery.duration import human_duration, parse_duration
from machinery.quantity import canonicalize, format_quantity, parse_quantity

EXAMPLES = int(os.environ.get("MINIK8S_FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# -- building blocks ----------------------------------------------------------------------

# Text that is mostly the parser's own alphabet, so examples get past the first character.
SELECTOR_TEXT = st.text(alphabet=string.ascii_lowercase[:6] + "0123456789=!,() .-_/\\\tinotx", max_size=40)
LABEL_NAME = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True)
LABEL_KEY = st.one_of(LABEL_NAME, st.builds(lambda p, n: f"{p}/{n}",
                                             st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,5})?",
                                                           fullmatch=True), LABEL_NAME))
LABEL_VALUE = st.one_of(st.just(""), LABEL_NAME)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53),
                        st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=8))
JSON = st.recursive(JSON_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=20)
# Pod-shaped values: real field names so strategic merge and apply reach their list logic.
PLAIN_KEYS = ["metadata", "spec", "status", "labels", "annotations", "name", "containers",
              "initContainers", "volumes", "ports", "env", "containerPort", "protocol", "image",
              "value", "finalizers", "ownerReferences", "uid", "tolerations", "key", "volumeMounts", "mountPath"]
DIRECTIVES = ["$patch", "$retainKeys", "$setElementOrder/containers", "$deleteFromPrimitiveList/finalizers"]


def _shaped(keys: list[str]) -> st.SearchStrategy:
    return st.recursive(JSON_SCALAR, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(keys), inner, max_size=4)), max_leaves=25)


POD_JSON = _shaped(PLAIN_KEYS)                  # an object as stored
POD_PATCH = _shaped(PLAIN_KEYS + DIRECTIVES)    # a patch, with strategic merge's directives


def _api_error(exc: BaseException) -> bool:
    return isinstance(exc, errors.APIError) and 400 <= exc.code < 500


# -- label selectors ----------------------------------------------------------------------

@fuzz
@given(SELECTOR_TEXT)
def test_label_selector_parses_or_is_bad_request_and_round_trips(text):
    try:
        sel = labels.parse(text)
    except errors.BadRequest:
        return
    assert labels.parse(str(sel)) == sel


@st.composite
def label_requirements(draw):
    key = draw(LABEL_KEY)
    op = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]))
    if op in ("in", "notin"):
        return f"{key} {op} ({','.join(draw(st.lists(LABEL_VALUE, min_size=1, max_size=3)))})"
    if op == "exists":
        return key
    if op == "!":
        return f"!{key}"
    return f"{key}{op}{draw(LABEL_VALUE)}"


@fuzz
@given(st.lists(label_requirements(), min_size=1, max_size=4),
       st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=4))
def test_a_well_formed_label_selector_always_parses_and_matches_as_its_round_trip(reqs, obj_labels):
    sel = labels.parse(",".join(reqs))
    again = labels.parse(str(sel))
    assert again == sel
    assert again.matches(obj_labels) == sel.matches(obj_labels)


# -- field selectors ----------------------------------------------------------------------

@fuzz
@given(SELECTOR_TEXT)
def test_field_selector_parses_or_is_bad_request_and_round_trips(text):
    try:
        sel = fields.parse(text)
    except errors.BadRequest:
        return
    assert fields.parse(str(sel)) == sel


@fuzz
@given(st.text(max_size=20))
def test_field_selector_values_escape_and_unescape_to_themselves(value):
    assert fields.unescape_value(fields.escape_value(value)) == value
    sel = fields.one_term("metadata.name", value)
    assert fields.parse(str(sel)) == sel
    assert sel.matches({"metadata.name": value})


# -- quantities and durations ---------------------------------------------------------------

QUANTITY_TEXT = st.one_of(
    st.text(alphabet="0123456789.+-eEinumkKMGTP", max_size=12),
    st.from_regex(r"[+-]?[0-9]{1,6}(\.[0-9]{0,4})?(m|k|M|G|Ki|Mi|Gi|Ti|e[0-9]|E[0-9])?", fullmatch=True))


@fuzz
@given(st.one_of(QUANTITY_TEXT, st.integers(), st.floats(allow_nan=False, allow_infinity=False), JSON))
def test_quantity_parses_or_is_a_value_error_and_canonical_form_keeps_the_value(value):
    try:
        exact = parse_quantity(value)
    except ValueError:
        return
    assert isinstance(exact, Fraction)
    if isinstance(value, str) and exact >= 0:
        assert parse_quantity(canonicalize(value)) == exact


@fuzz
@given(st.integers(0, 2**62), st.sampled_from(["", "m", "Ki", "Mi", "Gi", "k", "M", "G"]))
def test_formatted_quantity_parses_back_to_its_value(n, suffix):
    value = parse_quantity(f"{n}{suffix}")
    assert parse_quantity(format_quantity(value)) == value


@fuzz
@given(st.one_of(st.text(alphabet="0123456789.+-nsuµmh ", max_size=12),
                 st.from_regex(r"-?([0-9]{1,4}(\.[0-9]{1,3})?(ns|us|ms|s|m|h)){1,3}", fullmatch=True)))
def test_duration_parses_or_is_a_value_error(text):
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert isinstance(seconds, float)
    if seconds >= 0:
        assert isinstance(human_duration(seconds), str)


# -- patches ----------------------------------------------------------------------------------

@fuzz
@given(JSON, JSON)
def test_merge_patch_never_fails_never_mutates_and_is_idempotent(target, p):
    before = copy.deepcopy((target, p))
    once = patch.merge_patch(target, p)
    assert (target, p) == before
    assert patch.merge_patch(once, p) == once


JSON_PATCH_OP = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
     "path": st.one_of(st.sampled_from(["", "/", "/a", "/a/0", "/a/-", "/b/c", "/~1x", "/a/~0"]),
                       st.text(max_size=6))},
    optional={"value": JSON, "from": st.sampled_from(["/a", "/b", "", "/x/y"])})


@fuzz
@given(JSON, st.one_of(st.lists(JSON_PATCH_OP, max_size=4), JSON))
def test_json_patch_applies_or_is_a_4xx_and_never_mutates(target, ops):
    before = copy.deepcopy((target, ops))
    try:
        patch.json_patch(target, ops)
    except errors.APIError as e:
        assert _api_error(e), e
    assert (target, ops) == before


@fuzz
@given(POD_JSON, POD_PATCH)
def test_strategic_merge_applies_or_is_a_4xx_and_never_mutates(original, p):
    if not isinstance(original, dict) or not isinstance(p, dict):
        return
    before = copy.deepcopy((original, p))
    try:
        out = patch.strategic_merge_patch(original, p, "Pod")
    except errors.APIError as e:
        assert _api_error(e), e
    else:
        assert "$patch" not in orjson.dumps(out).decode()
    assert (original, p) == before


PODS = registry.by_plural("pods")


@fuzz
@given(st.one_of(st.none(), POD_JSON), POD_JSON, st.booleans())
def test_server_side_apply_merges_or_is_a_4xx(live, config, force):
    if not isinstance(config, dict) or (live is not None and not isinstance(live, dict)):
        return
    config = {**config, "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    if live is not None:
        live = {**live, "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "managedFields": []}}
    try:
        out = ssa.apply(live, config, PODS, manager="fuzz", force=force, subresource=None,
                        now="2026-01-01T00:00:00Z")
    except errors.APIError as e:
        assert _api_error(e), e
    else:
        assert out["kind"] == "Pod" and out["metadata"]["name"] == "p"


# -- jsonpath -----------------------------------------------------------------------------------

JSONPATH_TEXT = st.one_of(
    st.text(alphabet="{}[]().@$*?=!<>,:'\" -abcxyz0123456789\\", max_size=30),
    st.builds(lambda a, b: "{" + a + b + "}", st.sampled_from(["$", ".", "..", "@", "range ", "end"]),
              st.text(alphabet=".[]*?()@=!'\"abc0123456789:-,", max_size=15)))


@fuzz
@given(JSONPATH_TEXT, JSON)
def test_jsonpath_compiles_and_renders_or_is_a_jsonpath_error(template, data):
    try:
        out = Template(template).render(data)
    except (JSONPathError, CLIError):  # Template reports a bad template as kubectl's one line
        return
    assert isinstance(out, str)


# -- YAML and JSON ------------------------------------------------------------------------------

YAML_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="abc:-[]{}&*!|>'\"#%@`?,.0123456789 \n\t~yn", max_size=60))
SAFE_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


@fuzz
@given(YAML_TEXT)
def test_yaml_loads_to_json_or_is_a_yaml_error(text):
    try:
        docs = list(yamlutil.load_all(text))
    except yaml.YAMLError:
        return
    for doc in docs:
        orjson.dumps(doc)  # what it gives JSON can always hold


@fuzz
@given(st.dictionaries(st.text(max_size=6), SAFE_JSON, max_size=4))
def test_a_json_manifest_loads_to_itself(value):
    # A manifest is an object; read as JSON, as kubectl's YAMLOrJSONDecoder reads one.
    assert yamlutil.load(orjson.dumps(value)) == value
    assert list(yamlutil.load_all(orjson.dumps(value))) == [value]


@fuzz
@given(SAFE_JSON)
def test_json_that_yaml_can_hold_is_yaml_that_loads_to_itself(value):
    text = orjson.dumps(value).decode()
    # YAML 1.1 (go-yaml's too) folds NEL and the Unicode separators inside quoted scalars.
    assume(not any(c in text for c in "\x85\u2028\u2029"))
    try:
        yaml.safe_load(orjson.dumps(value))
    except yaml.YAMLError:
        return  # characters YAML may not hold (DEL, C1 controls): see the test above
    assert yamlutil.load(orjson.dumps(value)) == value


# -- protobuf -----------------------------------------------------------------------------------

def _pb(number: int, value: bytes) -> bytes:
    out, n = bytearray([number << 3 | 2]), len(value)
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out) + value


VALID_POD = protobuf.MAGIC + _pb(1, _pb(1, b"v1") + _pb(2, b"Pod")) + _pb(
    2, _pb(1, _pb(1, b"p")) + _pb(2, _pb(2, _pb(1, b"c") + _pb(2, b"busybox"))))


@fuzz
@given(st.one_of(st.binary(max_size=80), st.binary(max_size=60).map(lambda b: protobuf.MAGIC + b),
                 st.tuples(st.integers(0, len(VALID_POD) - 1), st.integers(0, 255)).map(
                     lambda m: VALID_POD[:m[0]] + bytes([m[1]]) + VALID_POD[m[0] + 1:]),
                 st.integers(0, len(VALID_POD)).map(lambda n: VALID_POD[:n])))
def test_protobuf_body_decodes_or_is_a_4xx(body):
    try:
        obj = protobuf.decode(body)
    except errors.APIError as e:
        assert _api_error(e), e
        return
    assert isinstance(obj, dict)
    orjson.dumps(obj)


def test_the_valid_protobuf_pod_decodes():
    obj = protobuf.decode(VALID_POD)
    assert obj["kind"] == "Pod" and obj["metadata"]["name"] == "p"
    assert obj["spec"]["containers"][0]["image"] == "busybox"


# -- kubeconfig ---------------------------------------------------------------------------------

KUBECONFIG_DOC = st.fixed_dictionaries({}, optional={
    "clusters": st.one_of(JSON, st.lists(st.fixed_dictionaries(
        {"name": st.one_of(st.text(max_size=4), JSON)}, optional={"cluster": JSON}), max_size=3)),
    "users": st.one_of(JSON, st.lists(st.fixed_dictionaries(
        {"name": st.text(max_size=4)}, optional={"user": JSON}), max_size=3)),
    "contexts": st.one_of(JSON, st.lists(st.fixed_dictionaries(
        {"name": st.text(max_size=4)}, optional={"context": JSON}), max_size=3)),
    "current-context": JSON, "preferences": JSON})


@fuzz
@given(st.one_of(KUBECONFIG_DOC.map(lambda d: yaml.safe_dump(d)), YAML_TEXT))
def test_kubeconfig_loads_or_is_a_value_error(text):
    try:
        cfg = kubeconfig.loads(text)
    except ValueError:
        return
    assert isinstance(cfg, kubeconfig.KubeConfig)


@pytest.mark.parametrize("text", ["clusters: [1]", "users: {a: b}", "contexts: [{name: x, context: 5}]",
                                  "- a\n- b", "current-context: [x]", "preferences: 3"])
def test_a_kubeconfig_of_the_wrong_shape_is_a_value_error(text):
    with pytest.raises(ValueError):
        kubeconfig.loads(text)
