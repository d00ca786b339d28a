"""Label selectors and label/name syntax checks, with Kubernetes' semantics.

Guarantees:
- `parse(s)` accepts exactly Kubernetes' string grammar (apimachinery pkg/labels):
  `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma = AND,
  whitespace between tokens ignored, `k=` meaning "equals the empty string", `in ()`
  meaning the set {""}. Keys and values are validated as Kubernetes validates them.
  Bad input raises `BadRequest` with Kubernetes' wording. (`k>1` / `k<1` are rejected.)
- `!=` and `notin` match objects that lack the key; `in`/`=` require it.
- Requirements are kept sorted by key (stable), as Kubernetes does, so `str()` is
  deterministic and re-parses to an equal selector.
- `from_label_selector` converts a metav1.LabelSelector dict: `{}` matches everything,
  `None` matches nothing.
- Selectors are immutable values; nothing here does I/O or keeps global state, so any
  thread or task may share them.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, NamedTuple

from machinery.errors import BadRequest

# --- name and label syntax (content.IsLabelKey, IsLabelValue, IsDNS1123*) ---------------

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _LABEL_KEY_FMT + ")?"
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_LABEL_KEY_RE = re.compile(_LABEL_KEY_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # Kubernetes' RegexError, double space and all, so messages read identically.
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


_SUBDOMAIN_MSG = _regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character",
    _DNS1123_SUBDOMAIN_FMT, "example.com")
_LABEL_MSG = _regex_error(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character",
    _DNS1123_LABEL_FMT, "my-name", "123-abc")
_KEY_NAME_MSG = _regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character", _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
_VALUE_MSG = _regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character",
    _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")


def _join(errs: list[str]) -> str | None:
    return "; ".join(errs) or None


def _subdomain_errors(name: str) -> list[str]:
    errs = [_max_len(253)] if len(name) > 253 else []
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(name):
        errs.append(_SUBDOMAIN_MSG)
    return errs


def validate_dns1123_subdomain(name: str) -> str | None:
    """Error message (several joined with '; ') or None, as IsDNS1123Subdomain."""
    return _join(_subdomain_errors(name))


def validate_dns1123_label(name: str) -> str | None:
    """Error message or None, as IsDNS1123Label (max 63, no dots)."""
    errs = [_max_len(63)] if len(name) > 63 else []
    if not _DNS1123_LABEL_RE.fullmatch(name):
        errs.append("must not contain dots" if _DNS1123_SUBDOMAIN_RE.fullmatch(name)
                    else _LABEL_MSG)
    return _join(errs)


def validate_label_key(key: str) -> str | None:
    """Error message or None for a label key / qualified name: [prefix/]name."""
    parts = key.split("/")
    if len(parts) > 2:
        return ("a valid label key " + _KEY_NAME_MSG + " with an optional DNS subdomain "
                "prefix and '/' (e.g. 'example.com/MyName')")
    errs: list[str] = []
    if len(parts) == 2:
        if not parts[0]:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in _subdomain_errors(parts[0])]
    name = parts[-1]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len(63))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append("name part " + _KEY_NAME_MSG)
    return _join(errs)


def validate_label_value(value: str) -> str | None:
    """Error message or None for a label value (may be empty)."""
    errs = [_max_len(63)] if len(value) > 63 else []
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_VALUE_MSG)
    return _join(errs)


# --- requirements and selectors -----------------------------------------------------------

# Operator spellings are Kubernetes' selection.Operator values.
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "in", "notin", "exists", "!"
_SET_OPS = (IN, NOT_IN)
_EXACT_OPS = (EQUALS, DOUBLE_EQUALS, NOT_EQUALS)


class Requirement(NamedTuple):
    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == EXISTS:
            return self.key in labels
        if self.op == DOES_NOT_EXIST:
            return self.key not in labels
        if self.key not in labels:
            return self.op in (NOT_IN, NOT_EQUALS)
        found = labels[self.key] in self.values
        return not found if self.op in (NOT_IN, NOT_EQUALS) else found

    def __str__(self) -> str:
        if self.op == EXISTS:
            return self.key
        if self.op == DOES_NOT_EXIST:
            return "!" + self.key
        if self.op in _SET_OPS:
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        return f"{self.key}{self.op}{self.values[0]}"


def requirement(key: str, op: str, values: Iterable[str] = ()) -> Requirement:
    """Build a validated Requirement (labels.NewRequirement); BadRequest if invalid."""
    values = tuple(values)
    if not isinstance(key, str) or not all(isinstance(v, str) for v in values):
        raise BadRequest(f"label selector keys and values must be strings: {key!r} {values!r}")
    errs = []
    if (msg := validate_label_key(key)) is not None:
        errs.append(f'key: Invalid value: "{key}": {msg}')
    if op in _SET_OPS:
        if not values:
            errs.append("values: Invalid value: []: for 'in', 'notin' operators, "
                        "values set can't be empty")
        values = tuple(sorted(set(values)))
    elif op in _EXACT_OPS:
        if len(values) != 1:
            errs.append(f"values: Invalid value: {list(values)}: exact-match compatibility "
                        "requires one single value")
    elif op in (EXISTS, DOES_NOT_EXIST):
        if values:
            errs.append(f"values: Invalid value: {list(values)}: values set must be empty "
                        "for exists and does not exist")
    else:
        errs.append(f'operator: Unsupported value: "{op}": supported values: "!", "!=", '
                    '"=", "==", "exists", "in", "notin"')
    for v in values:
        if (msg := validate_label_value(v)) is not None:
            errs.append(f'values[{key}]: Invalid value: "{v}": {msg}')
    if errs:
        raise BadRequest(errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
    return Requirement(key, op, values)


class Selector:
    """An AND of requirements. `Selector(())` matches everything; `nothing()` nothing."""

    __slots__ = ("requirements", "_nothing")

    def __init__(self, requirements: Iterable[Requirement] = (), *, _nothing: bool = False):
        self.requirements: tuple[Requirement, ...] = tuple(
            sorted(requirements, key=lambda r: r.key))
        self._nothing = _nothing

    @property
    def empty(self) -> bool:
        """True when the selector has no requirements, i.e. matches everything."""
        return not self.requirements and not self._nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must equal for a match, if any (for index lookups)."""
        for r in self.requirements:
            if r.key == key and (r.op in (EQUALS, DOUBLE_EQUALS) or
                                 (r.op == IN and len(r.values) == 1)):
                return r.values[0]
        return None

    def add(self, *reqs: Requirement) -> Selector:
        return Selector(self.requirements + reqs, _nothing=self._nothing)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "nothing()" if self._nothing else f"parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Selector) and self._nothing == other._nothing
                and self.requirements == other.requirements)

    def __hash__(self) -> int:
        return hash((self.requirements, self._nothing))


def everything() -> Selector:
    return Selector()


def nothing() -> Selector:
    return Selector(_nothing=True)


def from_set(labels: Mapping[str, str] | None) -> Selector:
    """Selector matching exactly these labels (labels.SelectorFromSet); {} or None = all."""
    return Selector(requirement(k, EQUALS, [v]) for k, v in (labels or {}).items())


def from_label_selector(obj: Mapping[str, Any] | None) -> Selector:
    """Convert a metav1.LabelSelector dict (metav1.LabelSelectorAsSelector).

    `None` (no selector at all) matches nothing; `{}` (an empty selector) matches
    everything. Raises BadRequest for an unknown operator or invalid key/values.
    """
    if obj is None:
        return nothing()
    reqs = [requirement(k, EQUALS, [v]) for k, v in (obj.get("matchLabels") or {}).items()]
    ops = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}
    for expr in obj.get("matchExpressions") or []:
        op = expr.get("operator")
        if op not in ops:
            raise BadRequest(f'"{op}" is not a valid label selector operator')
        reqs.append(requirement(expr.get("key", ""), ops[op], expr.get("values") or []))
    return Selector(reqs)


# --- the string grammar ---------------------------------------------------------------

_SPECIAL = "=!(),<>"
_WHITESPACE = " \t\r\n"
_SYMBOLS = {"(", ")", ",", "!", "=", "==", "!=", ">", "<"}
_IDENT, _END = "identifier", "end of string"


def _lex(s: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal); kind is _IDENT, _END or the symbol itself."""
    tokens, i = [], 0
    while True:
        while i < len(s) and s[i] in _WHITESPACE:
            i += 1
        if i == len(s):
            tokens.append((_END, ""))
            return tokens
        if s[i] in _SPECIAL:
            # Longest run of special characters that still forms a known symbol.
            j, best = i, None
            while j < len(s) and s[j] in _SPECIAL:
                j += 1
                if s[i:j] in _SYMBOLS:
                    best = j
                elif best is not None:
                    break
            if best is None:
                raise BadRequest(f"unable to parse requirement: error expected: keyword "
                                 f"found '{s[i:j]}'")
            tokens.append((s[i:best], s[i:best]))
            i = best
        else:
            j = i
            while j < len(s) and s[j] not in _SPECIAL and s[j] not in _WHITESPACE:
                j += 1
            tokens.append((_IDENT, s[i:j]))
            i = j


class _Parser:
    def __init__(self, s: str):
        self.tokens = _lex(s)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            kind, lit = self.peek()
            if kind == _END:
                return reqs
            if kind not in (_IDENT, "!"):
                raise BadRequest(f"found '{lit}', expected: !, identifier, or 'end of string'")
            reqs.append(self.requirement())
            kind, lit = self.take()
            if kind == _END:
                return reqs
            if kind != ",":
                raise BadRequest(f"found '{lit}', expected: ',' or 'end of string'")
            if self.peek()[0] not in (_IDENT, "!"):
                raise BadRequest(f"found '{self.peek()[1]}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        negated = self.peek()[0] == "!"
        if negated:
            self.take()
        kind, key = self.take()
        if kind != _IDENT:
            raise BadRequest(f"unable to parse requirement: found '{key}', expected: identifier")
        if (msg := validate_label_key(key)) is not None:
            raise BadRequest(f'unable to parse requirement: Invalid value: "{key}": {msg}')
        if negated or self.peek()[0] in (_END, ","):
            return self.build(key, DOES_NOT_EXIST if negated else EXISTS, [])
        kind, lit = self.take()
        # 'in' and 'notin' are keywords only in operator position.
        if kind == _IDENT and lit in _SET_OPS:
            return self.build(key, lit, self.value_set())
        if kind in _EXACT_OPS:
            return self.build(key, kind, [self.exact_value()])
        if kind in (">", "<"):
            raise BadRequest(f"unable to parse requirement: operator '{kind}' is not supported "
                             "(only =, ==, !=, in, notin, exists, !)")
        raise BadRequest(f"unable to parse requirement: found '{lit}', expected: in, notin, "
                         "=, ==, !=")

    def build(self, key: str, op: str, values: list[str]) -> Requirement:
        try:
            return requirement(key, op, values)
        except BadRequest as e:
            raise BadRequest(f"unable to parse requirement: {e.message}") from None

    def exact_value(self) -> str:
        kind, lit = self.peek()
        if kind in (_END, ","):
            return ""
        self.take()
        if kind != _IDENT:
            raise BadRequest(f"unable to parse requirement: found '{lit}', expected: identifier")
        return lit

    def value_set(self) -> list[str]:
        kind, lit = self.take()
        if kind != "(":
            raise BadRequest(f"unable to parse requirement: found '{lit}' expected: '('")
        values: list[str] = []
        expect_value = True  # an empty slot between '(' / ',' and ',' / ')' is ""
        while True:
            kind, lit = self.take()
            if kind == _IDENT and expect_value:
                values.append(lit)
                expect_value = False
            elif kind in (",", ")"):
                if expect_value:
                    values.append("")
                if kind == ")":
                    return values
                expect_value = True
            else:
                raise BadRequest(f"unable to parse requirement: found '{lit}', expected: "
                                 "',', ')' or identifier")


def parse(s: str) -> Selector:
    """Parse a label selector string; BadRequest on bad syntax or invalid keys/values."""
    return Selector(_Parser(s).parse())
