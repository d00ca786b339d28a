"""YAML to JSON values with Kubernetes' rules: the one YAML reader of server and clients.

Kubernetes never keeps YAML: kubectl and kube-apiserver turn it into JSON with
sigs.k8s.io/yaml, which reads it with go-yaml v2 (YAML 1.1) into untyped values and
then makes them JSON-able. `load` and `load_all` give what that gives, so a manifest
means the same thing to minik8s as to a real cluster:

- A plain scalar that looks like a timestamp stays the string as written
  (`when: 2024-01-01 10:00:00` is "2024-01-01 10:00:00"; go-yaml keeps timestamps
  as strings when the target is untyped). PyYAML would make it a datetime.
- Booleans are YAML 1.1's, as go-yaml v2 has them: `y Y yes Yes YES on On ON true
  True TRUE` and `n N no No NO off Off OFF false False FALSE`. (PyYAML lacks
  `y`/`n`.)
- Numbers follow go-yaml's resolver: underscores are dropped, then Go's integer
  syntax (`0x`, `0o`, `0b`, and a leading `0` for octal), 64-bit; else a float of
  the form `1`, `1.5`, `.5`, `1e3` (PyYAML wants a dot and a signed exponent); no
  base-60 (`1:20` is a string, PyYAML makes it 80). `.inf` and `.nan` are floats,
  which JSON cannot carry, so they are an error, as in Go.
- `!!binary` is the decoded bytes as text (invalid UTF-8 becomes U+FFFD, as Go's
  JSON encoder writes it). Merge keys (`<<`) work. `=` is a plain string.
- Mapping keys become strings: ints in decimal, booleans as `true`/`false`, floats
  in Go's shortest float32 form; a null key is an error.
- Only JSON types come out: dict (str keys), list, str, int, float, bool, None.

Errors are `yaml.YAMLError`s: the parser's own (with a line and column) and
`YAMLToJSONError` for a value JSON cannot hold. Both functions are pure and
thread-safe; the C parser is used where PyYAML has it.
"""
from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import BaseResolver

__all__ = ["YAMLToJSONError", "load", "load_all"]

_TAG = "tag:yaml.org,2002:"


class YAMLToJSONError(yaml.YAMLError):
    """The YAML is well-formed but has a value JSON cannot hold (NaN, a null key)."""


class _Resolver(BaseResolver):
    """go-yaml v2's implicit types for plain scalars (see resolve.go there)."""


_Resolver.add_implicit_resolver(
    _TAG + "bool",
    re.compile(r"^(?:y|Y|yes|Yes|YES|on|On|ON|true|True|TRUE"
               r"|n|N|no|No|NO|off|Off|OFF|false|False|FALSE)$"),
    list("yYnNoOtTfF"))
_Resolver.add_implicit_resolver(
    _TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver(
    _TAG + "float", re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+."))
_Resolver.add_implicit_resolver(_TAG + "merge", re.compile(r"^<<$"), ["<"])
# Anything that may be a number; the constructor decides, as go-yaml does, and keeps
# the text when it is none (e.g. `2024-01-01`, `1.2.3`, `0x`).
_NUMBERISH = "tag:minik8s,2024:number"
_Resolver.add_implicit_resolver(
    _NUMBERISH, re.compile(r"^[-+.0-9][-+._0-9a-zA-Z]*$"), list("-+.0123456789"))


_INT = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_I64 = range(-2 ** 63, 2 ** 64)  # ParseInt's, then ParseUint's, range


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), falling back to ParseUint, or None."""
    if not _INT.match(text):
        return None
    sign, body = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        value = int(body[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    elif len(body) > 1 and body[0] == "0":
        if body.strip("01234567"):
            return None  # `09` is no octal; go-yaml makes it the float 9
        value = int(body, 8)
    else:
        value = int(body)
    value *= sign
    return value if value in _I64 else None


def _construct_number(loader: Any, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    plain = text.replace("_", "")
    if text.startswith("."):
        try:  # go-yaml's '.' hint: strconv.ParseFloat on the text as written
            return float(text) if _FLOAT.match(text) else text
        except ValueError:
            return text
    value = _go_int(plain)
    if value is not None:
        return value
    if _FLOAT.match(plain):
        return float(plain)
    return text


def _construct_text(loader: Any, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


def _construct_binary(loader: Any, node: yaml.ScalarNode) -> str:
    data: bytes = SafeConstructor.construct_yaml_binary(loader, node)
    return data.decode("utf-8", "replace")


# The C parser where PyYAML has it (several times faster), with the resolver and the
# constructors above in place of YAML 1.1's own.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    yaml_implicit_resolvers = _Resolver.yaml_implicit_resolvers
    bool_values: ClassVar[dict[str, bool]] = {**SafeConstructor.bool_values, "y": True, "n": False}

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[str, Any]:
        # Keys become strings as they are read: as Python keys, `1` and `true` would
        # be one key, while for Kubernetes they are "1" and "true".
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        self.flatten_mapping(node)  # merge keys
        mapping = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (dict, list)):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found unhashable key", key_node.start_mark)
            mapping[_key(key)] = self.construct_object(value_node, deep=deep)
        return mapping


_Loader.add_constructor(_NUMBERISH, _construct_number)
_Loader.add_constructor(_TAG + "timestamp", _construct_text)  # only if tagged !!timestamp
_Loader.add_constructor(_TAG + "binary", _construct_binary)


def _as_json(text: str | bytes) -> tuple[bool, Any]:
    """(True, value) when `text` is one JSON object, as apimachinery's YAMLOrJSONDecoder
    reads a stream whose first non-space character is `{`: JSON allows characters (DEL,
    C1 controls) a YAML stream may not hold, so such a manifest is read as JSON."""
    if text.lstrip()[:1] in ("{", b"{"):
        try:
            return True, orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML's flow style, `{a: b}`, or more than one document
    return False, None


def load(text: str | bytes) -> Any:
    """The first document of `text` as a JSON value (None if there is none). Like
    kube-apiserver's YAML body decoding, later documents are not read."""
    is_json, value = _as_json(text)
    if is_json:
        return value
    loader = _Loader(text)
    try:
        if not loader.check_node():
            return None
        return _Expander(len(text)).jsonable(loader.construct_document(loader.get_node()))
    finally:
        loader.dispose()


def load_all(text: str | bytes) -> Iterator[Any]:
    """Every document of `text`, in order, each as a JSON value (an empty one is None)."""
    is_json, value = _as_json(text)
    if is_json:
        yield value
        return
    loader = _Loader(text)
    try:
        while loader.check_node():
            yield _Expander(len(text)).jsonable(loader.construct_document(loader.get_node()))
    finally:
        loader.dispose()


class _Expander:
    """Copies a constructed document into plain JSON values, expanding aliases.

    PyYAML shares one object among an anchor's aliases, so a few lines of aliases of
    aliases ("billion laughs") stand for billions of values once written out as JSON;
    go-yaml refuses such a document ("excessive aliasing"), and so does this, by
    bounding the values written out by the size of the text. A value that contains
    itself (`a: &a [*a]`) has no JSON form either."""

    def __init__(self, size: int):
        self.budget = 10 * size + 10_000
        self.open: set[int] = set()

    def jsonable(self, value: Any) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise YAMLToJSONError("error converting YAML to JSON: yaml: document contains "
                                  "excessive aliasing")
        if isinstance(value, (dict, list)):
            if id(value) in self.open:
                raise YAMLToJSONError("error converting YAML to JSON: yaml: an anchored "
                                      "value contains itself")
            self.open.add(id(value))
            try:
                if isinstance(value, dict):  # keys are strings already (construct_mapping)
                    return {k: self.jsonable(v) for k, v in value.items()}
                return [self.jsonable(v) for v in value]
            finally:
                self.open.discard(id(value))
        if isinstance(value, float) and not math.isfinite(value):
            raise YAMLToJSONError(f"error converting YAML to JSON: json: unsupported value: "
                                  f"{_go_float32(value)}")
        return value


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int):
        return str(k)
    if isinstance(k, float):
        return _go_float32(k)
    raise YAMLToJSONError(f"error converting YAML to JSON: unsupported map key of type: "
                          f"{type(k).__name__}, key: {k!r}")


def _go_float32(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 32), with YAML's names for the specials (how
    sigs.k8s.io/yaml spells a float mapping key)."""
    if math.isnan(f):
        return ".nan"
    if math.isinf(f):
        return ".inf" if f > 0 else "-.inf"
    f32 = struct.unpack("f", struct.pack("f", f))[0]
    if math.isinf(f32):  # past float32's largest: Go's conversion gives ±Inf too
        return "+Inf" if f > 0 else "-Inf"
    for digits in range(1, 10):  # the shortest that reads back as the same float32
        text = f"{f32:.{digits - 1}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            break
    mantissa, exp_text = text.split("e")
    exp = int(exp_text)
    if exp < -4 or exp >= 6:  # %e for the shortest form, as Go decides it
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return f"{float(text):.{max(0, digits - 1 - exp)}f}"
