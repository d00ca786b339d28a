import pytest

from machinery import fields
from machinery.errors import BadRequest

POD = {"metadata.name": "web-1", "metadata.namespace": "default", "spec.nodeName": "n1",
       "status.phase": "Running", "metadata.labels": "a,b=c"}

MATCHES = [
    ("", POD, True),
    ("metadata.name=web-1", POD, True),
    ("metadata.name==web-1", POD, True),
    ("metadata.name=web-2", POD, False),
    ("metadata.name!=web-2", POD, True),
    ("metadata.name!=web-1", POD, False),
    ("spec.nodeName=n1,status.phase=Running", POD, True),
    ("spec.nodeName=n1,status.phase=Pending", POD, False),
    ("spec.nodeName=", {"spec.nodeName": ""}, True),
    ("spec.nodeName=", {}, True),  # a field the caller does not provide is ""
    ("spec.nodeName!=", {}, False),
    ("spec.nodeName!=", POD, True),
    (r"metadata.labels=a\,b\=c", POD, True),
    ("metadata.name=web-1,", POD, True),  # empty terms are skipped
]


@pytest.mark.parametrize("selector,flds,want", MATCHES)
def test_matches(selector, flds, want):
    assert fields.parse(selector).matches(flds) is want


def test_requirements_and_fields():
    sel = fields.parse("status.phase!=Failed,spec.nodeName==n1,metadata.name=a")
    assert [tuple(r) for r in sel.requirements] == [
        ("metadata.name", "=", "a"), ("spec.nodeName", "=", "n1"),
        ("status.phase", "!=", "Failed")]
    assert sel.fields() == {"metadata.name", "spec.nodeName", "status.phase"}
    assert sel.requires_exact_match("spec.nodeName") == "n1"
    assert sel.requires_exact_match("status.phase") is None
    assert fields.parse("").empty and fields.parse("").fields() == set()


@pytest.mark.parametrize("value", ["plain", "a,b", "a=b", "back\\slash", "x\\,=\\", "", "a!b"])
def test_escaping_round_trips(value):
    text = "metadata.name=" + fields.escape_value(value)
    sel = fields.parse(text)
    assert sel.requirements[0].value == value
    assert fields.parse(str(sel)) == sel


BAD = [
    ("metadata.name", "can't understand 'metadata.name'"),
    ("a=b,c", "can't understand 'c'"),
    (r"a=b\x", "invalid escape sequence: \\x"),
    ("a=b\\", "invalid escape sequence: \\"),
    (r"a=b\!", "invalid escape sequence: \\!"),
    ("a==b=c", "unescaped character in value: ="),
    ("a=b=c", "unescaped character in value: ="),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_syntax(text, message):
    with pytest.raises(BadRequest) as e:
        fields.parse(text)
    assert message in e.value.message


def test_operator_split_is_at_first_operator():
    # The field name is verbatim up to the first operator; `!` inside a value is literal.
    sel = fields.parse("a!=b!c")
    assert tuple(sel.requirements[0]) == ("a", "!=", "b!c")


def test_str_is_sorted():
    assert str(fields.parse("b=2,a!=1")) == "a!=1,b=2"
    assert str(fields.one_term("metadata.name", "x,y")) == r"metadata.name=x\,y"
