import pytest

from machinery import labels
from machinery.errors import BadRequest

L = {"app": "web", "tier": "fe", "env": "", "example.com/role": "db"}

MATCHES = [
    ("", L, True),
    ("app=web", L, True),
    ("app==web", L, True),
    ("app=db", L, False),
    ("app!=db", L, True),
    ("app!=web", L, False),
    ("missing!=x", L, True),  # != matches objects without the key
    ("missing=x", L, False),
    ("app in (web,api)", L, True),
    ("app in (api)", L, False),
    ("missing in (a)", L, False),
    ("app notin (api,db)", L, True),
    ("app notin (web)", L, False),
    ("missing notin (a)", L, True),  # notin matches objects without the key
    ("app", L, True),
    ("missing", L, False),
    ("!missing", L, True),
    ("!app", L, False),
    ("env=", L, True),  # `k=` is "equals the empty string"
    ("env in ()", L, True),  # `()` is the set {""}
    ("app in (,web)", L, True),
    ("example.com/role=db", L, True),
    ("app=web,tier=fe", L, True),
    ("app=web,tier=be", L, False),
    ("  app = web ,\ttier in ( fe , be ) , !missing ", L, True),
    ("in in (in)", {"in": "in"}, True),  # keywords are identifiers outside operator position
    ("app=web", None, False),
    ("!app", None, True),
]


@pytest.mark.parametrize("selector,lbls,want", MATCHES)
def test_matches(selector, lbls, want):
    assert labels.parse(selector).matches(lbls) is want


CANONICAL = [
    ("", ""),
    ("b=1,a=2", "a=2,b=1"),
    ("a==x", "a==x"),
    ("a!=x", "a!=x"),
    ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
    ("!a , b", "!a,b"),
    ("a in (b,b,a)", "a in (a,b)"),
    ("a=", "a="),
]


@pytest.mark.parametrize("text,want", CANONICAL)
def test_str_is_canonical_and_reparses(text, want):
    sel = labels.parse(text)
    assert str(sel) == want
    assert labels.parse(str(sel)) == sel


BAD = [
    ("a b", "found 'b'"),
    ("a=b c", "expected: ',' or 'end of string'"),
    ("a=b=c", "found '='"),
    ("a in b", "expected: '('"),
    ("a in (b", "expected: ',', ')' or identifier"),
    ("a in (b c)", "found 'c'"),
    ("!a=b", "found '='"),
    ("a,", "identifier after ','"),
    (",a", "expected: !, identifier"),
    ("=a", "expected: !, identifier"),
    ("a>1", "not supported"),
    ("a<1", "not supported"),
    ("-a", "name part must consist of alphanumeric"),
    ("a/b/c=d", "with an optional DNS subdomain prefix"),
    ("Foo.com/a=b", "prefix part a lowercase RFC 1123 subdomain"),
    ("/a", "prefix part must be non-empty"),
    ("a=" + "v" * 64, "must be no more than 63 characters"),
    ("a=b/c", "a valid label must be an empty string"),
    ("a in (x,-y)", "a valid label must be an empty string"),
    ("k" * 64, "name part must be no more than 63 characters"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_syntax_is_bad_request(text, message):
    with pytest.raises(BadRequest) as e:
        labels.parse(text)
    assert message in e.value.message
    assert e.value.code == 400


def test_requirements_expose_key_op_values():
    sel = labels.parse("b in (y,x),a=1,!c,d")
    assert [tuple(r) for r in sel.requirements] == [
        ("a", "=", ("1",)), ("b", "in", ("x", "y")), ("c", "!", ()), ("d", "exists", ())]
    assert sel.requires_exact_match("a") == "1"
    assert sel.requires_exact_match("b") is None
    assert labels.parse("b in (x)").requires_exact_match("b") == "x"
    assert labels.parse("a!=1").requires_exact_match("a") is None


def test_empty():
    assert labels.parse("").empty
    assert labels.parse(" ").empty
    assert not labels.parse("a").empty
    assert not labels.nothing().empty


STRUCTURED = [
    ({}, {"a": "1"}, True),
    ({}, {}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "api"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]},
     {"tier": "be"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]}, {}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": ""}, False),
    ({"matchLabels": {"app": "web"},
      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]},
     {"app": "web", "tier": "be"}, False),
]


@pytest.mark.parametrize("obj,lbls,want", STRUCTURED)
def test_from_label_selector(obj, lbls, want):
    assert labels.from_label_selector(obj).matches(lbls) is want


def test_none_label_selector_matches_nothing():
    sel = labels.from_label_selector(None)
    assert not sel.matches({})
    assert not sel.matches({"a": "b"})
    assert str(sel) == ""


@pytest.mark.parametrize("obj,message", [
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
     '"Gt" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
     "values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "values set must be empty"),
    ({"matchLabels": {"a b": "c"}}, "name part must consist"),
    ({"matchLabels": {"version": 1}}, "must be strings"),
])
def test_from_label_selector_rejects_invalid(obj, message):
    with pytest.raises(BadRequest) as e:
        labels.from_label_selector(obj)
    assert message in e.value.message


def test_from_set():
    sel = labels.from_set({"b": "2", "a": "1"})
    assert str(sel) == "a=1,b=2"
    assert sel.matches({"a": "1", "b": "2", "c": "3"})
    assert labels.from_set(None).empty


SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")

VALIDATORS = [
    (labels.validate_dns1123_subdomain, "example.com", None),
    (labels.validate_dns1123_subdomain, "a", None),
    (labels.validate_dns1123_subdomain, "Example.com", SUBDOMAIN_MSG),
    (labels.validate_dns1123_subdomain, "a..b", SUBDOMAIN_MSG),
    (labels.validate_dns1123_subdomain, "-a", SUBDOMAIN_MSG),
    (labels.validate_dns1123_subdomain, "", SUBDOMAIN_MSG),
    (labels.validate_dns1123_subdomain, "a" * 254, "must be no more than 253 characters"),
    (labels.validate_dns1123_label, "my-name", None),
    (labels.validate_dns1123_label, "a.b", "must not contain dots"),
    (labels.validate_dns1123_label, "My_name", LABEL_MSG),
    (labels.validate_dns1123_label, "a" * 64, "must be no more than 63 characters"),
    (labels.validate_label_key, "app", None),
    (labels.validate_label_key, "My.Key_1", None),
    (labels.validate_label_key, "kubernetes.io/app", None),
    (labels.validate_label_key, "", "name part must be non-empty"),
    (labels.validate_label_key, "a/", "name part must be non-empty"),
    (labels.validate_label_key, "_a", "name part must consist of alphanumeric characters"),
    (labels.validate_label_key, "x" * 254 + "/a", "prefix part must be no more than 253"),
    (labels.validate_label_value, "", None),
    (labels.validate_label_value, "v1.2_3-x", None),
    (labels.validate_label_value, "a b", "a valid label must be an empty string or consist"),
    (labels.validate_label_value, "-a", "a valid label must be an empty string or consist"),
]


@pytest.mark.parametrize("fn,value,want", VALIDATORS)
def test_validators(fn, value, want):
    got = fn(value)
    if want is None:
        assert got is None
    else:
        assert got is not None and want in got
