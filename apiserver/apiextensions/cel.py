"""x-kubernetes-validations: Kubernetes' CEL validation rules, evaluated with cel-python.

Contract:
- `compile_rules(rules, path, root=, schema=)` parses a node's rules once and returns
  the compiled `Rule`s and, worded as Kubernetes words them, the causes of rules that do
  not compile (syntax errors, references to anything but `self`, `oldSelf` and macro
  variables). Compiled rules are immutable and shared across threads.
- `run(rules, value, old, ...)` evaluates one node's rules against its value; a rule
  that reads `oldSelf` (a transition rule) runs only when the node has an old value,
  unless it sets optionalOldSelf, where `oldSelf` is an optional (`hasValue()`,
  `value()`, `orValue()`). Causes use Kubernetes' field paths and messages
  (`failed rule: ...`, `message`, `messageExpression`, `reason`, `fieldPath`).

cel-python (celpy, maintained by cloud-custodian) is a pure-Python CEL interpreter
without CEL's static type checker, so a rule that compares a string with an int fails
when it runs rather than when the CRD is created, and there are no cost estimates or
cost limits. Kubernetes' library functions that are provided: lists (isSorted, sum,
min, max, indexOf, lastIndexOf), strings (charAt, indexOf, lastIndexOf, lowerAscii,
upperAscii, replace, split, substring, trim, join), regex (find, findAll), url (url,
isURL, getScheme, getHost, getHostname, getPort, getEscapedPath, getQuery) and
quantity (quantity, isQuantity, sign, isInteger, asInteger, asApproximateFloat, add,
sub, isGreaterThan, isLessThan, compareTo). README's "Differences from Kubernetes"
lists what is not.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable

import celpy
import lark
from celpy import celtypes

from machinery import quantity as _quantity

if TYPE_CHECKING:
    from apiserver.apiextensions.schema import Structural

Cause = dict[str, str]

_ENV = celpy.Environment()
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_NAMES = {"self", "oldSelf", "int", "uint", "double", "bool", "string", "bytes", "list", "map",
          "null_type", "type", "duration", "timestamp", "optional"}
_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}


@dataclass(frozen=True)
class Rule:
    """One compiled x-kubernetes-validations entry."""
    rule: str
    message: str = ""
    message_expression: str = ""
    reason: str = ""
    field_path: tuple[str, ...] = ()  # fieldPath below the node: names, and map keys as "[k]"
    field_path_text: str = ""  # fieldPath rendered as Kubernetes renders it
    optional_old_self: bool = False
    transition: bool = False  # the rule reads oldSelf: only checked on update
    program: Any = field(default=None, compare=False, repr=False)
    message_program: Any = field(default=None, compare=False, repr=False)

    def error_string(self) -> str:
        return self.message.strip() or self.rule.strip()

    def default_message(self) -> str:
        return self.message.strip() if self.message.strip() else f"failed rule: {self.rule.strip()}"


# --- compiling --------------------------------------------------------------------------

class _CompileError(Exception):
    pass


def _parse(src: str) -> lark.Tree:
    try:
        return _ENV.compile(src)
    except celpy.CELParseError as e:
        line, col = getattr(e, "line", None) or 1, getattr(e, "column", None) or 1
        text = src.splitlines()[line - 1] if src.splitlines() else src
        # CEL's own shape: the position, then the line with a caret under it
        raise _CompileError(f"ERROR: <input>:{line}:{col}: Syntax error: unexpected input\n"
                            f" | {text}\n | {'.' * max(col - 1, 0)}^") from None


def _check_references(tree: lark.Tree) -> bool:
    """Reject references to anything but self, oldSelf and macro variables, as CEL's
    checker does; returns whether the expression reads oldSelf."""
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg" and len(node.children) >= 3:
            name = node.children[1]
            args = node.children[2]
            if str(name) in _MACROS and isinstance(args, lark.Tree) and args.children:
                idents = [t for t in args.children[0].scan_values(
                    lambda v: isinstance(v, lark.Token) and v.type == "IDENT")]
                if len(idents) == 1:
                    bound.add(str(idents[0]))
    uses_old = False
    for node in tree.iter_subtrees():
        if node.data != "ident":
            continue
        tok = node.children[0]
        name = str(tok)
        if name == "oldSelf":
            uses_old = True
        if name not in _NAMES and name not in bound:
            line, col = getattr(tok, "line", 1), getattr(tok, "column", 1)
            raise _CompileError(f"ERROR: <input>:{line}:{col}: undeclared reference to '{name}' "
                                "(in container '')")
    return uses_old


def _program(tree: lark.Tree) -> Any:
    return _ENV.program(tree, functions=_FUNCTIONS)


def compile_rules(rules: list[dict], path: str, *, root: bool = False,
                  schema: dict | None = None) -> tuple[list[Rule], list[Cause]]:
    """Compile a node's rules. The causes name `path` (the node's place in the CRD,
    e.g. `spec.versions[0].schema.openAPIV3Schema.properties[spec]`) as Kubernetes'
    CRD validation does; a rule that fails to compile is left out of the list."""
    out: list[Rule] = []
    causes: list[Cause] = []
    base = f"{path}.x-kubernetes-validations" if path else "x-kubernetes-validations"
    for i, r in enumerate(rules):
        src = str(r.get("rule") or "")
        if not src.strip():
            continue
        try:
            tree = _parse(src)
            transition = _check_references(tree)
            program = _program(tree)
            msg_program = None
            if r.get("messageExpression"):
                try:
                    mtree = _parse(str(r["messageExpression"]))
                    _check_references(mtree)
                    msg_program = _program(mtree)
                except _CompileError as e:
                    causes.append(_invalid(f"{base}[{i}].messageExpression", r["messageExpression"],
                                           f"messageExpression compilation failed: {e}"))
                    continue
        except _CompileError as e:
            causes.append(_invalid(f"{base}[{i}].rule", r, f"compilation failed: {e}"))
            continue
        if transition and r.get("optionalOldSelf") is None:
            pass
        elif r.get("optionalOldSelf") and not transition:
            causes.append(_invalid(f"{base}[{i}].optionalOldSelf", True,
                                   "may not be set if rule does not use oldSelf"))
            continue
        reason = r.get("reason") or ""
        if reason and reason not in _REASONS:
            causes.append(_not_supported(f"{base}[{i}].reason", reason, sorted(_REASONS)))
            continue
        fp_text = str(r.get("fieldPath") or "")
        try:
            fp = _parse_field_path(fp_text, schema) if fp_text else ()
        except ValueError as e:
            causes.append(_invalid(f"{base}[{i}].fieldPath", fp_text, str(e)))
            continue
        out.append(Rule(rule=src, message=str(r.get("message") or ""),
                        message_expression=str(r.get("messageExpression") or ""),
                        reason=reason, field_path=fp, field_path_text=fp_text,
                        optional_old_self=bool(r.get("optionalOldSelf")),
                        transition=transition, program=program, message_program=msg_program))
    return out, causes


def _parse_field_path(text: str, schema: dict | None) -> tuple[str, ...]:
    """A rule's fieldPath (`.spec.foo`, `.labels['a.b']`) as the property and key names
    it walks through, checked against the node's schema as Kubernetes' ValidFieldPath
    checks it. Array notation names map keys only."""
    out: list[str] = []
    s = schema or {}
    for m in re.finditer(r"\.([^.\[\]]+)|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|(.)", text):
        if m.group(3) is not None:
            raise ValueError(f"expected [ or . but got: {m.group(3)}")
        name = m.group(1) if m.group(1) is not None else re.sub(r"\\(.)", r"\1", m.group(2))
        if isinstance(s.get("properties"), dict) and s["properties"]:
            if name not in s["properties"]:
                raise ValueError("does not refer to a valid field")
            s = s["properties"][name]
            out.append(name)
        elif isinstance(s.get("additionalProperties"), dict):
            s = s["additionalProperties"]
            out.append(f"[{name}]")  # a map key, as field.Path.Key prints it
        else:
            raise ValueError("does not refer to a valid field")
    return tuple(out)


# --- running ----------------------------------------------------------------------------

class _Optional:
    """CEL's optional, for oldSelf under optionalOldSelf."""
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def run(rules: list[Rule], value: Any, old: Any, *, field: str, schema: Structural,
        has_old: bool) -> list[Cause]:
    """Evaluate one node's compiled rules against its value (and old value)."""
    out: list[Cause] = []
    field = field or "<nil>"  # the root, as Go prints a nil field.Path
    self_val = to_cel(value, schema)
    old_val = to_cel(old, schema) if has_old else None
    for r in rules:
        if r.transition and not has_old and not r.optional_old_self:
            continue
        act: dict[str, Any] = {"self": self_val}
        if r.transition:
            if r.optional_old_self:
                act["oldSelf"] = _Optional(old_val if has_old else _NONE)
            else:
                act["oldSelf"] = old_val
        try:
            result = r.program.evaluate(act)
        except celpy.CELEvalError as e:
            out.append(_invalid(field, schema.type, _eval_error(e, r)))
            continue
        except Exception as e:  # noqa: BLE001 - a library function's failure is the rule's error
            out.append(_invalid(field, schema.type, f"{e} evaluating rule: {r.error_string()}"))
            continue
        if isinstance(result, celtypes.BoolType) and bool(result):
            continue
        if not isinstance(result, celtypes.BoolType):
            out.append(_invalid(field, schema.type, f"rule did not evaluate to a bool: {r.error_string()}"))
            continue
        detail = r.default_message()
        if r.message_program is not None:
            detail = _message(r, act) or detail
        where = field
        for name in r.field_path:
            if where == "<nil>":
                where = name
            elif name.startswith("["):
                where += name
            else:
                where = _join(where, name)
        omit = schema.type in ("object", "array")
        out.append(_error_for_reason(r.reason, where, value, detail, omit=omit))
    return out


_NONE = object()


def _message(r: Rule, act: dict) -> str | None:
    try:
        msg = r.message_program.evaluate(act)
    except Exception:  # noqa: BLE001 - Kubernetes logs it and falls back to message or rule
        return None
    if not isinstance(msg, str):
        return None
    msg = msg.strip()
    if not msg or "\n" in msg or len(msg) > 5000:
        return None
    return msg


def _eval_error(e: celpy.CELEvalError, r: Rule) -> str:
    """A rule's runtime error as Kubernetes words it."""
    args = e.args
    kind = args[1] if len(args) >= 2 else None
    if kind is TypeError:
        return ("'no such overload': call arguments did not match a supported operator, function or "
                f"macro signature for rule: {r.error_string()}")
    if kind is KeyError:
        m = re.search(r"'([^']*)'", str(args[0]))
        err = f"no such key: {m.group(1) if m else args[0]}"
    elif kind is IndexError:
        err = "index out of bounds"
    elif kind is ZeroDivisionError:
        err = "division by zero"
    else:
        err = str(args[0]) if args else str(e)
    return f"{err} evaluating rule: {r.error_string()}"


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


# --- values -----------------------------------------------------------------------------

_CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else",
                 "for", "function", "if", "import", "let", "loop", "package", "namespace",
                 "return", "var", "void", "while"}
_IDENT = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def escape(name: str) -> str:
    """A property name as CEL rules spell it (Kubernetes' escaping)."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    if _IDENT.match(name) and "__" not in name:
        return name
    return (name.replace("__", "__underscores__").replace(".", "__dot__")
            .replace("-", "__dash__").replace("/", "__slash__"))


def to_cel(v: Any, s: Structural | None) -> Any:
    """A JSON value as the CEL value a rule sees, typed by the schema: number fields are
    doubles, int-or-string stays what it is, date-time/duration/byte strings are
    timestamps, durations and bytes; object properties are escaped."""
    if v is None:
        return None
    if s is None:
        return celpy.json_to_cel(v)
    if isinstance(v, bool):
        return celtypes.BoolType(v)
    if isinstance(v, int):
        return celtypes.DoubleType(v) if s.type == "number" else celtypes.IntType(v)
    if isinstance(v, float):
        if s.type == "integer" and v.is_integer():
            return celtypes.IntType(int(v))
        return celtypes.DoubleType(v)
    if isinstance(v, str):
        try:
            if s.format == "date-time":
                return celtypes.TimestampType(v)
            if s.format == "duration":
                return celtypes.DurationType(v)
            if s.format == "byte":
                return celtypes.BytesType(base64.b64decode(v))
        except (ValueError, TypeError, binascii.Error):  # the schema validation's cause, not CEL's
            pass
        return celtypes.StringType(v)
    if isinstance(v, list):
        return celtypes.ListType([to_cel(x, s.items) for x in v])
    if isinstance(v, dict):
        out: dict[Any, Any] = {}
        for k, x in v.items():
            sub = s.properties.get(k)
            if sub is not None:
                out[celtypes.StringType(escape(k))] = to_cel(x, sub)
            elif s.additional is not None:
                out[celtypes.StringType(k)] = to_cel(x, s.additional)
            else:
                out[celtypes.StringType(k)] = celpy.json_to_cel(x)
        return celtypes.MapType(out)
    return celpy.json_to_cel(v)


# --- causes -----------------------------------------------------------------------------

def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, separators=(",", ":"), default=str)


def _invalid(field: str, value: Any, detail: str, *, omit: bool = False) -> Cause:
    shown = "" if omit else f": {_show(value)}"
    return {"reason": "FieldValueInvalid", "field": field, "message": f"Invalid value{shown}: {detail}"}


def _not_supported(field: str, value: Any, allowed: list[str]) -> Cause:
    vals = ", ".join(json.dumps(a) for a in allowed)
    return {"reason": "FieldValueNotSupported", "field": field,
            "message": f"Unsupported value: {_show(value)}: supported values: {vals}"}


def _error_for_reason(reason: str, field: str, value: Any, detail: str, *, omit: bool) -> Cause:
    if reason == "FieldValueForbidden":
        return {"reason": reason, "field": field, "message": f"Forbidden: {detail}"}
    if reason == "FieldValueRequired":
        return {"reason": reason, "field": field, "message": f"Required value: {detail}"}
    if reason == "FieldValueDuplicate":
        return {"reason": reason, "field": field, "message": f"Duplicate value: {_show(value)}"}
    return _invalid(field, value, detail, omit=omit)


# --- Kubernetes' CEL libraries -------------------------------------------------------------

def _fn(f: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        try:
            return f(*args)
        except celpy.CELEvalError:
            raise
        except (TypeError, ValueError, IndexError, AttributeError) as e:
            return celpy.CELEvalError(f"{f.__name__.lstrip('_')}: {e}", type(e), None)
    wrapped.__name__ = f.__name__
    return wrapped


def _cmp_ok(xs: list) -> bool:
    return all(xs[i] <= xs[i + 1] for i in range(len(xs) - 1))


def _sum(xs: list) -> Any:
    if not xs:
        return celtypes.IntType(0)
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


def _min(xs: list) -> Any:
    if not xs:
        raise ValueError("min called on empty list")
    return min(xs)


def _max(xs: list) -> Any:
    if not xs:
        raise ValueError("max called on empty list")
    return max(xs)


def _index_of(x: Any, y: Any, *start: Any) -> Any:
    if isinstance(x, str):
        begin = int(start[0]) if start else 0
        if begin < 0 or begin > len(x):
            raise IndexError(f"index out of range: {begin}")
        return celtypes.IntType(x.find(y, begin))
    for i, e in enumerate(x):
        if e == y:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _last_index_of(x: Any, y: Any, *end: Any) -> Any:
    if isinstance(x, str):
        stop = int(end[0]) if end else len(x)
        if stop < 0 or stop > len(x):
            raise IndexError(f"index out of range: {stop}")
        return celtypes.IntType(x.rfind(y, 0, stop + len(y)))
    for i in range(len(x) - 1, -1, -1):
        if x[i] == y:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _char_at(s: str, i: Any) -> Any:
    i = int(i)
    if i < 0 or i > len(s):
        raise IndexError(f"index out of range: {i}")
    return celtypes.StringType(s[i:i + 1])


def _substring(s: str, start: Any, *end: Any) -> Any:
    a = int(start)
    b = int(end[0]) if end else len(s)
    if a < 0 or b > len(s) or a > b:
        raise IndexError(f"index out of range: {a}")
    return celtypes.StringType(s[a:b])


def _replace(s: str, old: str, new: str, *n: Any) -> Any:
    count = int(n[0]) if n else -1
    return celtypes.StringType(s.replace(old, new, count))


def _split(s: str, sep: str, *n: Any) -> Any:
    limit = int(n[0]) if n else -1
    if limit == 0:
        return celtypes.ListType([])
    parts = s.split(sep, limit - 1) if limit > 0 else s.split(sep) if sep else list(s)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _join_list(xs: list, *sep: Any) -> Any:
    return celtypes.StringType((str(sep[0]) if sep else "").join(str(x) for x in xs))


def _find(s: str, pattern: str) -> Any:
    m = re.search(pattern, s)
    return celtypes.StringType(m.group(0) if m else "")


def _find_all(s: str, pattern: str, *n: Any) -> Any:
    found = [m.group(0) for m in re.finditer(pattern, s)]
    if n and int(n[0]) >= 0:
        found = found[:int(n[0])]
    return celtypes.ListType([celtypes.StringType(x) for x in found])


class _URL:
    __slots__ = ("parts",)

    def __init__(self, parts: urllib.parse.SplitResult):
        self.parts = parts


def _parse_url(s: str) -> urllib.parse.SplitResult | None:
    try:
        p = urllib.parse.urlsplit(s)
        _ = p.port
    except ValueError:
        return None
    if not p.scheme and not s.startswith("/"):
        return None
    return p


def _url(s: str) -> Any:
    p = _parse_url(str(s))
    if p is None:
        raise ValueError(f"URL parse error during conversion from string: {s}")
    return _URL(p)


def _host(u: _URL) -> Any:
    netloc = u.parts.netloc.rsplit("@", 1)[-1]
    return celtypes.StringType(netloc)


def _hostname(u: _URL) -> Any:
    return celtypes.StringType(u.parts.hostname or "")


def _port(u: _URL) -> Any:
    return celtypes.StringType(str(u.parts.port) if u.parts.port is not None else "")


class _Quantity:
    __slots__ = ("text", "value")

    def __init__(self, text: str, value: Fraction):
        self.text, self.value = text, value


def _parse_quantity(s: str) -> Fraction | None:
    try:
        return _quantity.parse_quantity(str(s))
    except (ValueError, TypeError, ArithmeticError):
        return None


def _make_quantity(s: str) -> Any:
    v = _parse_quantity(s)
    if v is None:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {s}")
    return _Quantity(str(s), v)


def _q(x: Any) -> Fraction:
    if isinstance(x, _Quantity):
        return x.value
    return Fraction(int(x))


def _q_add(a: _Quantity, b: Any) -> Any:
    return _Quantity("", a.value + _q(b))


def _q_sub(a: _Quantity, b: Any) -> Any:
    return _Quantity("", a.value - _q(b))


def _q_sign(a: _Quantity) -> Any:
    return celtypes.IntType((a.value > 0) - (a.value < 0))


def _q_is_integer(a: _Quantity) -> Any:
    return celtypes.BoolType(a.value.denominator == 1 and -2**63 <= a.value < 2**63)


def _q_as_integer(a: _Quantity) -> Any:
    if a.value.denominator != 1 or not -2**63 <= a.value < 2**63:
        raise ValueError("cannot convert value to integer")
    return celtypes.IntType(int(a.value))


def _q_compare(a: _Quantity, b: _Quantity) -> Any:
    return celtypes.IntType((a.value > b.value) - (a.value < b.value))


def _has_value(o: Any) -> Any:
    return celtypes.BoolType(isinstance(o, _Optional) and o.value is not _NONE)


def _value(o: Any) -> Any:
    if not isinstance(o, _Optional) or o.value is _NONE:
        raise ValueError("optional.none() dereference")
    return o.value


def _or_value(o: Any, default: Any) -> Any:
    if isinstance(o, _Optional) and o.value is not _NONE:
        return o.value
    return default


def _min_or_string(*a: Any) -> Any:
    return _min(a[0]) if len(a) == 1 else min(a)


def _max_or_string(*a: Any) -> Any:
    return _max(a[0]) if len(a) == 1 else max(a)


def _get(f: Callable[[Any], Any]) -> Callable[..., Any]:
    return f


_FUNCTIONS: dict[str, Callable[..., Any]] = {name: _fn(f) for name, f in {
    "isSorted": lambda xs: celtypes.BoolType(_cmp_ok(list(xs))),
    "sum": _sum, "min": _min_or_string, "max": _max_or_string,
    "indexOf": _index_of, "lastIndexOf": _last_index_of,
    "charAt": _char_at, "substring": _substring, "replace": _replace, "split": _split,
    "lowerAscii": lambda s: celtypes.StringType(
        "".join(c.lower() if c.isascii() else c for c in s)),
    "upperAscii": lambda s: celtypes.StringType(
        "".join(c.upper() if c.isascii() else c for c in s)),
    "trim": lambda s: celtypes.StringType(s.strip()),
    "join": _join_list, "find": _find, "findAll": _find_all,
    "url": _url, "isURL": lambda s: celtypes.BoolType(_parse_url(str(s)) is not None),
    "getScheme": lambda u: celtypes.StringType(u.parts.scheme),
    "getHost": _host, "getHostname": _hostname, "getPort": _port,
    "getEscapedPath": lambda u: celtypes.StringType(u.parts.path),
    "getQuery": lambda u: celtypes.MapType({
        celtypes.StringType(k): celtypes.ListType([celtypes.StringType(x) for x in vs])
        for k, vs in urllib.parse.parse_qs(u.parts.query, keep_blank_values=True).items()}),
    "quantity": _make_quantity,
    "isQuantity": lambda s: celtypes.BoolType(_parse_quantity(s) is not None),
    "sign": _q_sign, "isInteger": _q_is_integer, "asInteger": _q_as_integer,
    "asApproximateFloat": lambda a: celtypes.DoubleType(float(a.value)),
    "add": _q_add, "sub": _q_sub, "compareTo": _q_compare,
    "isGreaterThan": lambda a, b: celtypes.BoolType(a.value > b.value),
    "isLessThan": lambda a, b: celtypes.BoolType(a.value < b.value),
    "hasValue": _has_value, "value": _value, "orValue": _or_value,
}.items()}
