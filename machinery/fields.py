"""Field selectors (`?fieldSelector=`), with Kubernetes' grammar (apimachinery pkg/fields).

Guarantees:
- `parse(s)` accepts `f=v`, `f==v`, `f!=v` terms joined by unescaped commas (AND); the
  empty string selects everything. In values `\\,`, `\\=` and `\\\\` are escapes; any other
  backslash sequence, or an unescaped `,`/`=` inside a value, is a `BadRequest`, as in
  Kubernetes. The field name is taken verbatim (up to the first operator).
- `matches(fields)` compares against the selectable field values the caller extracts
  from an object; a field the caller does not provide compares as "".
- `fields()` names every field used, so a server can answer 400
  'field label not supported: X' for fields it cannot select on.
- Selectors are immutable values; `str()` re-escapes values and re-parses equal.
  Nothing here does I/O or keeps state, so any thread or task may use it.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

from machinery.errors import BadRequest


class FieldRequirement(NamedTuple):
    field: str
    op: str  # "=" or "!=" ("==" is folded into "=", as Kubernetes does)
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        return (fields.get(self.field, "") == self.value) == (self.op == "=")

    def __str__(self) -> str:
        return f"{self.field}{self.op}{escape_value(self.value)}"


class FieldSelector:
    __slots__ = ("requirements",)

    def __init__(self, requirements: tuple[FieldRequirement, ...] = ()):
        self.requirements = tuple(requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def fields(self) -> set[str]:
        return {r.field for r in self.requirements}

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal for a match, if the selector pins one."""
        for r in self.requirements:
            if r.field == field and r.op == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldSelector) and self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash(self.requirements)


def escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            if i + 1 == len(value) or value[i + 1] not in "\\,=":
                raise BadRequest("invalid field selector: invalid escape sequence: "
                                 + value[i:i + 2])
            out.append(value[i + 1])
            i += 2
            continue
        if c in ",=":
            raise BadRequest(f"invalid field selector: unescaped character in value: {c}")
        out.append(c)
        i += 1
    return "".join(out)


def _split_terms(s: str) -> list[str]:
    terms, start, escaped = [], 0, False
    for i, c in enumerate(s):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(s[start:i])
            start = i + 1
    terms.append(s[start:])
    return terms


def parse(s: str) -> FieldSelector:
    """Parse a field selector string; BadRequest on bad syntax."""
    reqs = []
    # Kubernetes sorts the raw terms, which makes str() independent of input order.
    for term in sorted(_split_terms(s)) if s else []:
        if not term:
            continue
        for i in range(len(term)):
            op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
            if op:
                break
        else:
            raise BadRequest(f"invalid selector: '{s}'; can't understand '{term}'")
        value = unescape_value(term[i + len(op):])
        reqs.append(FieldRequirement(term[:i], "!=" if op == "!=" else "=", value))
    return FieldSelector(tuple(reqs))


def everything() -> FieldSelector:
    return FieldSelector()


def one_term(field: str, value: str) -> FieldSelector:
    """Selector for `field=value` (fields.OneTermEqualSelector)."""
    return FieldSelector((FieldRequirement(field, "=", value),))
