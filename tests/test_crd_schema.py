"""A CRD's schema, as apiextensions-apiserver applies it: structural rules, validation
messages, pruning, defaulting and CEL rules. Pure functions, no server: tables of cases,
each with Kubernetes' own wording."""
import copy

import pytest

from apiserver.apiextensions import cel
from apiserver.apiextensions.schema import compile_schema, structural_errors

ROOT = "spec.versions[0].schema.openAPIV3Schema"


def crd_schema(spec: dict, **root) -> dict:
    return {"type": "object", "properties": {"spec": spec}, **root}


def obj(spec) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def messages(causes) -> list[str]:
    return [f'{c["field"]}: {c["message"]}' for c in causes]


# --- structural schema rules ----------------------------------------------------------

STRUCTURAL = [
    ("fine", crd_schema({"type": "object", "properties": {"a": {"type": "string"}}}), []),
    ("type missing on a field",
     crd_schema({"type": "object", "properties": {"a": {"minimum": 1}}}),
     [f"{ROOT}.properties[spec].properties[a].type: Required value: must not be empty for specified object fields"]),
    ("type missing on items",
     crd_schema({"type": "array", "items": {}}),
     [f"{ROOT}.properties[spec].items.type: Required value: must not be empty for specified array items"]),
    ("array without items",
     crd_schema({"type": "array"}),
     [f"{ROOT}.properties[spec].items: Required value: must be specified"]),
    ("type missing at the root", {"properties": {"spec": {"type": "object"}}},
     [f"{ROOT}.type: Required value: must not be empty at the root"]),
    ("root not an object", {"type": "string"},
     [f'{ROOT}.type: Invalid value: "string": must be object at the root']),
    ("int-or-string needs no type", crd_schema({"x-kubernetes-int-or-string": True}), []),
    ("preserve-unknown-fields needs no type",
     crd_schema({"x-kubernetes-preserve-unknown-fields": True}), []),
    ("additionalProperties with properties",
     crd_schema({"type": "object", "properties": {"a": {"type": "string"}},
                 "additionalProperties": {"type": "string"}}),
     [f"{ROOT}.properties[spec].additionalProperties: Forbidden: "
      "additionalProperties and properties are mutual exclusive"]),
    ("additionalProperties at the root",
     {"type": "object", "additionalProperties": {"type": "string"}},
     [f"{ROOT}.additionalProperties: Forbidden: must not be used at the root"]),
    ("metadata at the root restricts more than names",
     {"type": "object", "properties": {"metadata": {"type": "object", "properties": {
         "labels": {"type": "object"}}}}},
     [f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and "
      "generateName, but metadata is implicitly specified"]),
    ("metadata at the root may restrict its name",
     {"type": "object", "properties": {"metadata": {"type": "object", "properties": {
         "name": {"type": "string", "maxLength": 10}}}}}, []),
    ("embedded resource must be an object",
     crd_schema({"type": "string", "x-kubernetes-embedded-resource": True,
                 "x-kubernetes-preserve-unknown-fields": True}),
     [f'{ROOT}.properties[spec].type: Invalid value: "string": must be object if '
      "x-kubernetes-embedded-resource is true"]),
    ("embedded resource without fields",
     crd_schema({"type": "object", "x-kubernetes-embedded-resource": True}),
     [f"{ROOT}.properties[spec].properties: Required value: must not be empty if "
      "x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"]),
    ("$ref", crd_schema({"type": "object", "$ref": "#/definitions/x"}),
     [f"{ROOT}.properties[spec].$ref: Forbidden: $ref is not supported"]),
    ("definitions", crd_schema({"type": "object", "definitions": {"x": {"type": "string"}}}),
     [f"{ROOT}.properties[spec].definitions: Forbidden: definitions is not supported"]),
    ("uniqueItems", crd_schema({"type": "array", "uniqueItems": True, "items": {"type": "string"}}),
     [f"{ROOT}.properties[spec].uniqueItems: Forbidden: uniqueItems cannot be set to true since "
      "the runtime complexity becomes quadratic"]),
    ("type null", crd_schema({"type": "null"}),
     [f"{ROOT}.properties[spec].type: Forbidden: type cannot be set to null, use nullable as an alternative",
      f"{ROOT}.properties[spec].type: Required value: must not be empty for specified object fields"][:1]),
    ("type in a value validation",
     crd_schema({"type": "object", "anyOf": [{"type": "object"}]}),
     [f"{ROOT}.properties[spec].anyOf[0].type: Forbidden: must be empty to be structural"]),
    ("int-or-string anyOf pattern is structural",
     crd_schema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}), []),
    ("default in top-level metadata",
     {"type": "object", "properties": {"metadata": {"type": "object", "default": {}}}},
     [f"{ROOT}.properties[metadata].default: Forbidden: must not be set in top-level metadata"]),
    ("list-type map needs keys",
     crd_schema({"type": "array", "x-kubernetes-list-type": "map",
                 "items": {"type": "object", "properties": {"name": {"type": "string"}}}}),
     [f"{ROOT}.properties[spec].x-kubernetes-list-map-keys: Required value: must not be empty if "
      "x-kubernetes-list-type is map"]),
    ("list-type unknown",
     crd_schema({"type": "array", "x-kubernetes-list-type": "bag", "items": {"type": "string"}}),
     [f'{ROOT}.properties[spec].x-kubernetes-list-type: Unsupported value: "bag": supported values: '
      '"atomic", "set", "map"']),
    ("a rule that does not compile",
     crd_schema({"type": "object", "x-kubernetes-validations": [{"rule": "self.a =="}]}),
     [f'{ROOT}.properties[spec].x-kubernetes-validations[0].rule: Invalid value: {{"rule":"self.a =="}}: '
      "compilation failed: ERROR: <input>:1:8: Syntax error: unexpected input\n | self.a ==\n | .......^"]),
    ("a rule that names an unknown variable",
     crd_schema({"type": "object", "x-kubernetes-validations": [{"rule": "self.a == other"}]}),
     [f'{ROOT}.properties[spec].x-kubernetes-validations[0].rule: Invalid value: {{"rule":"self.a == other"}}: '
      "compilation failed: ERROR: <input>:1:11: undeclared reference to 'other' (in container '')"]),
    ("an empty rule",
     crd_schema({"type": "object", "x-kubernetes-validations": [{"rule": " "}]}),
     [f"{ROOT}.properties[spec].x-kubernetes-validations[0].rule: Required value: rule is not specified"]),
    ("a fieldPath that names no field",
     crd_schema({"type": "object", "properties": {"a": {"type": "string"}},
                 "x-kubernetes-validations": [{"rule": "true", "fieldPath": ".b"}]}),
     [f'{ROOT}.properties[spec].x-kubernetes-validations[0].fieldPath: Invalid value: ".b": '
      "does not refer to a valid field"]),
]


@pytest.mark.parametrize("name,schema,want", STRUCTURAL, ids=[c[0] for c in STRUCTURAL])
def test_structural_errors(name, schema, want):
    assert messages(structural_errors(schema, ROOT)) == want


def test_structural_errors_reasons():
    causes = structural_errors(crd_schema({"type": "object", "properties": {"a": {}}}), ROOT)
    assert [c["reason"] for c in causes] == ["FieldValueRequired"]


# --- validation -------------------------------------------------------------------------

SPEC = {"type": "object", "required": ["replicas"], "properties": {
    "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
    "ratio": {"type": "number", "exclusiveMaximum": True, "maximum": 1, "multipleOf": 0.25},
    "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
    "mode": {"type": "string", "enum": ["Fast", "Slow"]},
    "when": {"type": "string", "format": "date-time"},
    "data": {"type": "string", "format": "byte"},
    "port": {"x-kubernetes-int-or-string": True},
    "note": {"type": "string", "nullable": True},
    "tags": {"type": "array", "maxItems": 2, "minItems": 1, "x-kubernetes-list-type": "set",
             "items": {"type": "string"}},
    "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
              "items": {"type": "object", "required": ["name"], "properties": {
                  "name": {"type": "string"}, "port": {"type": "integer"}}}},
    "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
    "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                 "x-kubernetes-preserve-unknown-fields": True},
}}

VALIDATE = [
    ("valid", {"replicas": 1, "ratio": 0.5, "name": "abc", "mode": "Fast", "when": "2024-01-02T03:04:05Z",
               "data": "aGVsbG8=", "port": "http", "note": None, "tags": ["a"],
               "ports": [{"name": "a", "port": 1}], "labels": {"a": "b"},
               "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}}, []),
    ("wrong type", {"replicas": "string"},
     ['spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"']),
    ("a whole number is an integer", {"replicas": 3.0}, []),
    ("required", {}, ["spec.replicas: Required value"]),
    ("maximum", {"replicas": 11},
     ["spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"]),
    ("minimum", {"replicas": -1},
     ["spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"]),
    ("exclusive maximum and multipleOf", {"replicas": 1, "ratio": 1},
     ["spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"]),
    ("multipleOf", {"replicas": 1, "ratio": 0.3},
     ["spec.ratio: Invalid value: 0.3: spec.ratio in body should be a multiple of 0.25"]),
    ("maxLength, pattern", {"replicas": 1, "name": "ABCDEF"},
     ["spec.name: Too long: may not be more than 5 bytes",
      "spec.name: Invalid value: \"ABCDEF\": spec.name in body should match '^[a-z]+$'"]),
    ("minLength", {"replicas": 1, "name": "a"},
     ['spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long']),
    ("enum", {"replicas": 1, "mode": "Medium"},
     ['spec.mode: Unsupported value: "Medium": supported values: "Fast", "Slow"']),
    ("date-time", {"replicas": 1, "when": "yesterday"},
     ['spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday"']),
    ("byte", {"replicas": 1, "data": "not base64!"},
     ['spec.data: Invalid value: "not base64!": spec.data in body must be of type byte: "not base64!"']),
    ("int-or-string takes an int", {"replicas": 1, "port": 8080}, []),
    ("int-or-string refuses a bool", {"replicas": 1, "port": True},
     ['spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"']),
    ("null where not nullable", {"replicas": None},
     ['spec.replicas: Invalid value: "null": spec.replicas in body must be of type integer: "null"']),
    ("maxItems, minItems", {"replicas": 1, "tags": ["a", "b", "c"]},
     ["spec.tags: Too many: 3: must have at most 2 items"]),
    ("minItems", {"replicas": 1, "tags": []},
     ["spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"]),
    ("list-type set", {"replicas": 1, "tags": ["a", "a"]}, ['spec.tags[1]: Duplicate value: "a"']),
    ("list-type map", {"replicas": 1, "ports": [{"name": "a"}, {"name": "b"}, {"name": "a", "port": 2}]},
     ['spec.ports[2]: Duplicate value: {"name":"a"}']),
    ("item paths", {"replicas": 1, "ports": [{"name": "a", "port": "x"}]},
     ['spec.ports[0].port: Invalid value: "string": spec.ports[0].port in body must be of type integer: "string"']),
    ("map values", {"replicas": 1, "labels": {"a": 1}},
     ['spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer"']),
    ("maxProperties", {"replicas": 1, "labels": {"a": "1", "b": "2"}},
     ["spec.labels: Too many: 1: must have at most 1 item"]),
    ("embedded resource needs apiVersion and kind", {"replicas": 1, "template": {"metadata": {}}},
     ["spec.template.apiVersion: Required value: must not be empty",
      "spec.template.kind: Required value: must not be empty"]),
    ("embedded resource metadata is ObjectMeta", {"replicas": 1, "template": {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"bad key!": "x"}}}},
     None),
]


@pytest.mark.parametrize("name,spec,want", VALIDATE, ids=[c[0] for c in VALIDATE])
def test_validate(name, spec, want):
    got = messages(compile_schema(crd_schema(SPEC)).validate(obj(spec)))
    if want is None:  # the ObjectMeta rules' own wording; the field is what matters here
        assert [g.split(":")[0] for g in got] == ["spec.template.metadata.labels"]
    else:
        assert got == want


def test_validate_reports_every_problem_with_reasons():
    causes = compile_schema(crd_schema(SPEC)).validate(obj({"replicas": "x", "mode": "No", "tags": ["a", "a"]}))
    assert [(c["field"], c["reason"]) for c in causes] == [
        ("spec.replicas", "FieldValueTypeInvalid"), ("spec.mode", "FieldValueNotSupported"),
        ("spec.tags[1]", "FieldValueDuplicate")]


# --- pruning ----------------------------------------------------------------------------

PRUNE = [
    ("unknown fields go",
     crd_schema({"type": "object", "properties": {"a": {"type": "string"}}}),
     obj({"a": "x", "b": 1}), obj({"a": "x"}), ["spec.b"]),
    ("apiVersion, kind and metadata stay at the root",
     {"type": "object"}, {"apiVersion": "v", "kind": "K", "metadata": {"name": "n"}, "other": 1},
     {"apiVersion": "v", "kind": "K", "metadata": {"name": "n"}}, ["other"]),
    ("preserve-unknown-fields keeps them, and prunes inside known fields",
     crd_schema({"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"known": {"type": "object", "properties": {}}}}),
     obj({"free": {"x": 1}, "known": {"y": 2}}), obj({"free": {"x": 1}, "known": {}}), ["spec.known.y"]),
    ("list items",
     crd_schema({"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}}),
     obj([{"a": 1, "b": 2}]), obj([{"a": 1}]), ["spec[0].b"]),
    ("map values",
     crd_schema({"type": "object", "additionalProperties": {
         "type": "object", "properties": {"a": {"type": "integer"}}}}),
     obj({"k": {"a": 1, "b": 2}}), obj({"k": {"a": 1}}), ["spec.k.b"]),
    ("embedded resources keep their apiVersion, kind and metadata",
     crd_schema({"type": "object", "x-kubernetes-embedded-resource": True,
                 "properties": {"spec": {"type": "object"}}}),
     obj({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "junk": 1}),
     obj({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}), ["spec.junk"]),
    ("values of the wrong type are left to validation",
     crd_schema({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}}),
     obj({"a": "text"}), obj({"a": "text"}), []),
]


@pytest.mark.parametrize("name,schema,before,after,dropped", PRUNE, ids=[c[0] for c in PRUNE])
def test_prune(name, schema, before, after, dropped):
    got = copy.deepcopy(before)
    assert compile_schema(schema).prune(got) == dropped
    assert got == after


# --- defaulting -------------------------------------------------------------------------

DEFAULT = [
    ("absent field", {"type": "object", "properties": {"a": {"type": "integer", "default": 3}}},
     {}, {"a": 3}),
    ("present field kept", {"type": "object", "properties": {"a": {"type": "integer", "default": 3}}},
     {"a": 1}, {"a": 1}),
    ("defaults inside defaults",
     {"type": "object", "properties": {"a": {"type": "object", "default": {}, "properties": {
         "b": {"type": "string", "default": "x"}}}}},
     {}, {"a": {"b": "x"}}),
    ("null in a non-nullable field takes the default",
     {"type": "object", "properties": {"a": {"type": "integer", "default": 3}}}, {"a": None}, {"a": 3}),
    ("null in a nullable field stays",
     {"type": "object", "properties": {"a": {"type": "integer", "default": 3, "nullable": True}}},
     {"a": None}, {"a": None}),
    ("null without a default is dropped",
     {"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": None}, {}),
    ("list items",
     {"type": "array", "items": {"type": "object", "properties": {"p": {"type": "string", "default": "TCP"}}}},
     [{}, {"p": "UDP"}], [{"p": "TCP"}, {"p": "UDP"}]),
    ("map values",
     {"type": "object", "additionalProperties": {"type": "object", "properties": {
         "n": {"type": "integer", "default": 1}}}},
     {"x": {}}, {"x": {"n": 1}}),
    ("no default on an absent parent",
     {"type": "object", "properties": {"a": {"type": "object", "properties": {
         "b": {"type": "string", "default": "x"}}}}},
     {}, {}),
]


@pytest.mark.parametrize("name,spec,before,after", DEFAULT, ids=[c[0] for c in DEFAULT])
def test_default(name, spec, before, after):
    o = obj(copy.deepcopy(before))
    compile_schema(crd_schema(spec)).default(o)
    assert o == obj(after)


def test_default_value_is_a_copy():
    s = compile_schema(crd_schema({"type": "object", "properties": {"a": {"type": "object", "default": {"x": 1}}}}))
    first, second = obj({}), obj({})
    s.default(first)
    first["spec"]["a"]["x"] = 2
    s.default(second)
    assert second["spec"]["a"] == {"x": 1}


# --- CEL --------------------------------------------------------------------------------

CEL_SPEC = {"type": "object", "properties": {
    "replicas": {"type": "integer"}, "min": {"type": "integer"}, "name": {"type": "string"},
    "list": {"type": "array", "items": {"type": "integer"}},
    "size": {"type": "string"}, "url": {"type": "string"},
    "until": {"type": "string", "format": "date-time"}, "every": {"type": "string", "format": "duration"},
    "x-y": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
              "items": {"type": "object", "required": ["name"], "properties": {
                  "name": {"type": "string"},
                  "value": {"type": "integer", "x-kubernetes-validations": [
                      {"rule": "self >= oldSelf", "message": "may not shrink"}]}}}},
}}


def cel_schema(rules, **extra):
    spec = dict(CEL_SPEC, **{"x-kubernetes-validations": rules}, **extra)
    return compile_schema(crd_schema(spec))


CEL = [
    ("holds", [{"rule": "self.replicas >= self.min"}], {"replicas": 2, "min": 1}, None, []),
    ("fails: the rule is the message", [{"rule": "self.replicas >= self.min"}], {"replicas": 0, "min": 1}, None,
     ["spec: Invalid value: failed rule: self.replicas >= self.min"]),
    ("message", [{"rule": "self.replicas >= self.min", "message": "replicas below min"}],
     {"replicas": 0, "min": 1}, None, ["spec: Invalid value: replicas below min"]),
    ("messageExpression", [{"rule": "self.replicas >= self.min",
                            "messageExpression": "'replicas ' + string(self.replicas) + ' below ' + string(self.min)"}],
     {"replicas": 0, "min": 1}, None, ["spec: Invalid value: replicas 0 below 1"]),
    ("messageExpression that fails falls back to message",
     [{"rule": "false", "message": "static", "messageExpression": "self.nothing"}],
     {}, None, ["spec: Invalid value: static"]),
    ("reason and fieldPath", [{"rule": "self.replicas > 0", "reason": "FieldValueForbidden",
                               "fieldPath": ".replicas", "message": "must be positive"}],
     {"replicas": 0}, None, ["spec.replicas: Forbidden: must be positive"]),
    ("reason Required", [{"rule": "has(self.name)", "reason": "FieldValueRequired", "message": "name it"}],
     {}, None, ["spec: Required value: name it"]),
    ("a missing key is an evaluation error", [{"rule": "self.name == 'x'"}], {}, None,
     ['spec: Invalid value: "object": no such key: name evaluating rule: self.name == \'x\'']),
    ("a transition rule is skipped on create", [{"rule": "self.replicas >= oldSelf.replicas"}],
     {"replicas": 1}, None, []),
    ("a transition rule on update", [{"rule": "self.replicas >= oldSelf.replicas", "message": "no scale down"}],
     {"replicas": 1}, {"replicas": 2}, ["spec: Invalid value: no scale down"]),
    ("a transition rule that holds", [{"rule": "self.replicas >= oldSelf.replicas"}],
     {"replicas": 3}, {"replicas": 2}, []),
    ("optionalOldSelf runs on create", [{"rule": "oldSelf.hasValue() || self.replicas == 1",
                                         "optionalOldSelf": True, "message": "start at one"}],
     {"replicas": 2}, None, ["spec: Invalid value: start at one"]),
    ("optionalOldSelf on update", [{"rule": "self.replicas >= oldSelf.orValue(self).replicas",
                                    "optionalOldSelf": True, "message": "no scale down"}],
     {"replicas": 2}, {"replicas": 5}, ["spec: Invalid value: no scale down"]),
    ("list items correlate by map key", [],
     {"items": [{"name": "a", "value": 1}, {"name": "b", "value": 9}]},
     {"items": [{"name": "b", "value": 1}, {"name": "a", "value": 5}]},
     ["spec.items[0].value: Invalid value: 1: may not shrink"]),
    ("a scalar's value is shown", [], {"items": [{"name": "a", "value": 1}]}, {"items": [{"name": "a", "value": 2}]},
     ["spec.items[0].value: Invalid value: 1: may not shrink"]),
    ("escaped property names", [{"rule": "self.x__dash__y == 'z'"}], {"x-y": "z"}, None, []),
    ("fieldPath through a map key", [{"rule": "self.labels.all(k, k != 'bad')", "fieldPath": ".labels['a.b']"}],
     {"labels": {"a.b": "x", "bad": "y"}}, None,
     ["spec.labels[a.b]: Invalid value: failed rule: self.labels.all(k, k != 'bad')"]),
    ("list library", [{"rule": "self.list.isSorted() && self.list.sum() == 6 && self.list.min() == 1 "
                               "&& self.list.max() == 3 && self.list.indexOf(2) == 1"}],
     {"list": [1, 2, 3]}, None, []),
    ("list library fails", [{"rule": "self.list.isSorted()"}], {"list": [3, 1]}, None,
     ["spec: Invalid value: failed rule: self.list.isSorted()"]),
    ("string library", [{"rule": "self.name.lowerAscii() == 'abc' && self.name.charAt(1) == 'B' "
                                 "&& self.name.indexOf('C') == 2 && self.name.split('B') == ['A', 'C'] "
                                 "&& self.name.substring(1) == 'BC' && ['a', 'b'].join('-') == 'a-b' "
                                 "&& self.name.matches('^A') && self.name.find('[BC]+') == 'BC'"}],
     {"name": "ABC"}, None, []),
    ("quantity library", [{"rule": "isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('1Gi')) "
                                   "&& quantity('1500m').compareTo(quantity('1.5')) == 0"}],
     {"size": "2Gi"}, None, []),
    ("url library", [{"rule": "isURL(self.url) && url(self.url).getHostname() == 'example.com' "
                              "&& url(self.url).getPort() == '8080' && url(self.url).getScheme() == 'https'"}],
     {"url": "https://example.com:8080/x"}, None, []),
    ("timestamps and durations", [{"rule": "self.until > timestamp('2020-01-01T00:00:00Z') "
                                           "&& self.every > duration('1m')"}],
     {"until": "2024-01-01T00:00:00Z", "every": "5m"}, None, []),
    ("a type mismatch is no such overload", [{"rule": "self.name == 1"}], {"name": "x"}, None,
     ["spec: Invalid value: \"object\": 'no such overload': call arguments did not match a supported "
      "operator, function or macro signature for rule: self.name == 1"]),
]


@pytest.mark.parametrize("name,rules,spec,old,want", CEL, ids=[c[0] for c in CEL])
def test_cel(name, rules, spec, old, want):
    s = cel_schema(rules)
    assert messages(s.validate(obj(spec), None if old is None else obj(old))) == want


def test_cel_rules_on_map_values_use_key_paths():
    s = compile_schema(crd_schema({"type": "object", "additionalProperties": {
        "type": "string", "x-kubernetes-validations": [{"rule": "self.size() < 3", "message": "short"}]}}))
    assert messages(s.validate(obj({"a.b": "long"}))) == ['spec[a.b]: Invalid value: "long": short']


def test_cel_is_blocked_by_type_errors():
    s = cel_schema([{"rule": "self.replicas > 0"}])
    assert messages(s.validate(obj({"replicas": "x"}))) == [
        'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
        '<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; '
        "correct the existing errors to complete validation"]


def test_cel_rule_at_the_root_sees_metadata_name():
    s = compile_schema({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.metadata.name.startsWith('w')", "message": "names start with w"}]})
    assert s.validate(obj({})) == []
    bad = obj({})
    bad["metadata"]["name"] = "x"
    assert messages(s.validate(bad)) == ["<nil>: Invalid value: names start with w"]


def test_rules_compile_once():
    rules, errors = cel.compile_rules([{"rule": "self > 0"}, {"rule": "self >"}], "p")
    assert [r.rule for r in rules] == ["self > 0"] and [e["field"] for e in errors] == [
        "p.x-kubernetes-validations[1].rule"]
    s = cel_schema([{"rule": "self.replicas > 0"}])
    spec = s.properties["spec"]
    program = spec.rules[0].program
    s.validate(obj({"replicas": 1}))
    s.validate(obj({"replicas": 2}))
    assert spec.rules[0].program is program


def test_validate_does_not_change_the_object():
    s = cel_schema([{"rule": "self.replicas > 0"}])
    o = obj({"replicas": 1, "labels": {"a": "b"}})
    before = copy.deepcopy(o)
    s.validate(o, copy.deepcopy(o))
    assert o == before
