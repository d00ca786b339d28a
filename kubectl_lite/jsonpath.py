"""kubectl's JSONPath templates (k8s.io/client-go/util/jsonpath), for `-o jsonpath=` and
`-o custom-columns=`.

Supported: text and `{...}` actions; `$`, `@`, `.field` (`\\.` escapes a dot in a name),
`..field` (recursive descent), `*` and `[*]`, `[n]`, `[-n]`, `[start:end:step]`,
`['name']`, unions `[0,2]` / `['a','b']`, filters `[?(@.x == "v")]` with `== != < <= > >=`
or bare existence `[?(@.x)]`, `{range EXPR}...{end}`, and string literals `{"\\n"}`.
Missing keys yield nothing (kubectl's default, allow-missing-template-keys). Results of
one action are joined by spaces; maps and lists print as compact JSON, as kubectl does.
"""
from __future__ import annotations

import json
from typing import Any

from kubectl_lite.common import CLIError

_STOP = set(".[]{}()=!<>, \t\"'")


class JSONPathError(Exception):
    pass


# -- parsing -----------------------------------------------------------------------------

class _Expr:
    def __init__(self, s: str):
        self.s, self.i = s, 0

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def eat(self, text: str) -> bool:
        if self.s.startswith(text, self.i):
            self.i += len(text)
            return True
        return False

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def name(self) -> str:
        out = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s):
                out.append(self.s[self.i + 1])
                self.i += 2
                continue
            if ch in _STOP:
                break
            out.append(ch)
            self.i += 1
        return "".join(out)

    def quoted(self) -> str:
        q = self.s[self.i]
        self.i += 1
        out = []
        while self.i < len(self.s) and self.s[self.i] != q:
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s):
                nxt = self.s[self.i + 1]
                out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                self.i += 2
                continue
            out.append(ch)
            self.i += 1
        if not self.eat(q):
            raise JSONPathError("unclosed quote")
        return "".join(out)

    def steps(self) -> list[tuple]:
        """A path: [$|@] then .name, ..name, .*, [..] steps, up to what cannot continue it."""
        out: list[tuple] = []
        if self.peek() in ("$", "@"):
            self.i += 1
        while self.i < len(self.s):
            if self.eat(".."):
                if self.eat("*"):
                    out.append(("recursive", None))
                else:
                    n = self.name()
                    if not n:
                        raise JSONPathError("missing field name after '..'")
                    out.append(("recursive", n))
            elif self.eat("."):
                if self.eat("*"):
                    out.append(("wild",))
                elif self.peek() == "[" or self.i >= len(self.s) or self.peek() in " }":
                    continue  # `.` alone, or `.[0]`: the current value
                else:
                    n = self.name()
                    if not n:
                        raise JSONPathError(f"unrecognized character in action: {self.peek()!r}")
                    out.append(("field", n))
            elif self.eat("["):
                out.append(self.bracket())
            else:
                break
        return out

    def bracket(self) -> tuple:
        self.skip_ws()
        if self.eat("*"):
            self.skip_ws()
            self.expect("]")
            return ("wild",)
        if self.eat("?"):
            self.skip_ws()
            self.expect("(")
            self.skip_ws()
            left = self.steps()
            self.skip_ws()
            op, right = None, None
            for cand in ("==", "!=", "<=", ">=", "<", ">"):
                if self.eat(cand):
                    op = cand
                    self.skip_ws()
                    right = self.operand()
                    break
            self.skip_ws()
            self.expect(")")
            self.skip_ws()
            self.expect("]")
            return ("filter", left, op, right)
        items: list[Any] = []
        while True:
            self.skip_ws()
            if self.peek() in ("'", '"'):
                items.append(self.quoted())
            else:
                start = self.i
                while self.i < len(self.s) and self.s[self.i] not in ",]":
                    self.i += 1
                items.append(_index(self.s[start:self.i].strip()))
            self.skip_ws()
            if self.eat("]"):
                return ("index", items)
            if not self.eat(","):
                raise JSONPathError("unterminated array")

    def operand(self) -> tuple:
        if self.peek() in ("'", '"'):
            return ("lit", self.quoted())
        if self.peek() in ("@", "$"):
            return ("path", self.steps())
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in ") \t":
            self.i += 1
        raw = self.s[start:self.i]
        for conv in (int, float):
            try:
                return ("lit", conv(raw))
            except ValueError:
                pass
        if raw in ("true", "false"):
            return ("lit", raw == "true")
        return ("lit", raw)

    def expect(self, text: str) -> None:
        if not self.eat(text):
            raise JSONPathError(f"expected {text!r} at position {self.i}")


def _index(text: str) -> Any:
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        if len(parts) > 3:
            raise JSONPathError(f"invalid array index {text}")
        try:
            nums = [int(p) if p else None for p in parts]
        except ValueError:
            raise JSONPathError(f"invalid array index {text}") from None
        return slice(*nums)
    try:
        return int(text)
    except ValueError:
        raise JSONPathError(f"invalid array index {text}") from None


def parse(template: str) -> list[tuple]:
    """Template -> nodes: ("text", s), ("expr", steps), ("range", steps, body)."""
    nodes: list[tuple] = []
    stack: list[list[tuple]] = [nodes]
    i = 0
    while i < len(template):
        j = template.find("{", i)
        if j < 0:
            stack[-1].append(("text", template[i:]))
            break
        if j > i:
            stack[-1].append(("text", template[i:j]))
        k = _close(template, j + 1)
        action = template[j + 1:k].strip()
        i = k + 1
        if action == "end":
            if len(stack) == 1:
                raise JSONPathError("not in range, nothing to end")
            stack.pop()
            continue
        if action.startswith("range ") or action.startswith("range\t"):
            e = _Expr(action[6:].strip())
            steps = e.steps()
            if e.i != len(e.s):
                raise JSONPathError(f"unrecognized character in action: {e.s[e.i:]!r}")
            body: list[tuple] = []
            stack[-1].append(("range", steps, body))
            stack.append(body)
            continue
        e = _Expr(action)
        e.skip_ws()
        if e.peek() in ('"', "'"):
            text = e.quoted()
            e.skip_ws()
            if e.i != len(e.s):
                raise JSONPathError(f"unrecognized character in action: {e.s[e.i:]!r}")
            stack[-1].append(("text", text))
            continue
        steps = e.steps()
        e.skip_ws()
        if e.i != len(e.s):
            raise JSONPathError(f"unrecognized character in action: {e.s[e.i:]!r}")
        stack[-1].append(("expr", steps))
    if len(stack) > 1:
        raise JSONPathError("unclosed range")
    return nodes


def _close(s: str, i: int) -> int:
    quote = None
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in ('"', "'"):
            quote = ch
        elif ch == "}":
            return i
        i += 1
    raise JSONPathError("unclosed action")


# -- evaluation --------------------------------------------------------------------------

def evaluate(steps: list[tuple], values: list[Any]) -> list[Any]:
    for step in steps:
        nxt: list[Any] = []
        kind = step[0]
        for v in values:
            if kind == "field":
                if isinstance(v, dict) and step[1] in v:
                    nxt.append(v[step[1]])
            elif kind == "wild":
                if isinstance(v, dict):
                    nxt.extend(v[k] for k in sorted(v))
                elif isinstance(v, list):
                    nxt.extend(v)
            elif kind == "index":
                for item in step[1]:
                    if isinstance(item, str):
                        if isinstance(v, dict) and item in v:
                            nxt.append(v[item])
                    elif isinstance(v, list):
                        if isinstance(item, slice):
                            nxt.extend(v[item])
                        elif -len(v) <= item < len(v):
                            nxt.append(v[item])
                        else:
                            raise JSONPathError(f"array index out of bounds: index {item}, "
                                                f"length {len(v)}")
            elif kind == "recursive":
                _descend(v, step[1], nxt)
            elif kind == "filter":
                items = v if isinstance(v, list) else [v]
                nxt.extend(x for x in items if _keep(x, step[1], step[2], step[3]))
        values = nxt
    return values


def _descend(v: Any, name: str | None, out: list[Any]) -> None:
    if isinstance(v, dict):
        if name is None:
            out.extend(v[k] for k in sorted(v))
        elif name in v:
            out.append(v[name])
        for k in sorted(v):
            _descend(v[k], name, out)
    elif isinstance(v, list):
        if name is None:
            out.extend(v)
        for x in v:
            _descend(x, name, out)


def _keep(item: Any, left: list[tuple], op: str | None, right: tuple | None) -> bool:
    lefts = evaluate(left, [item])
    if op is None:
        return bool(lefts) and lefts[0] not in (None, False, "", 0)
    if not lefts:
        return False
    assert right is not None
    rights = [right[1]] if right[0] == "lit" else evaluate(right[1], [item])
    if not rights:
        return False
    a, b = lefts[0], rights[0]
    if isinstance(a, (int, float)) and isinstance(b, str):
        try:
            b = float(b)
        except ValueError:
            pass
    if isinstance(a, str) and isinstance(b, (int, float)) and not isinstance(b, bool):
        try:
            a = float(a)
        except ValueError:
            return op == "!="
    try:
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
                ">=": a >= b}[op]
    except TypeError:
        return op == "!="


def text_of(value: Any) -> str:
    """One result as kubectl's JSONPath printer writes it."""
    if isinstance(value, (dict, list)):
        from kubectl_lite.printers import go_json_escape
        return go_json_escape(json.dumps(value, separators=(",", ":"), sort_keys=True,
                                         ensure_ascii=False))
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "<nil>"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(nodes: list[tuple], data: Any, root: Any = None) -> str:
    root = data if root is None else root
    out: list[str] = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(" ".join(text_of(v) for v in evaluate(node[1], [data])))
        else:
            items: list[Any] = []
            for v in evaluate(node[1], [data]):
                items.extend(v if isinstance(v, list) else [v])
            for v in items:
                out.append(render(node[2], v, root))
    return "".join(out)


class Template:
    """A parsed template; `render(obj)` or, for custom columns, `values(obj)`."""

    def __init__(self, template: str):
        self.source = template
        try:
            self.nodes = parse(template)
        except JSONPathError as exc:
            raise CLIError(f"error parsing jsonpath {template}, {exc}") from None

    def render(self, data: Any) -> str:
        try:
            return render(self.nodes, data)
        except JSONPathError as exc:
            raise CLIError(f"error executing jsonpath {self.source!r}: {exc}") from None

    def values(self, data: Any) -> list[Any]:
        out: list[Any] = []
        try:
            for node in self.nodes:
                if node[0] == "expr":
                    out.extend(evaluate(node[1], [data]))
        except JSONPathError:
            return []
        return out


def relaxed(expr: str) -> str:
    """kubectl's RelaxedJSONPathExpression: `metadata.name`, `.metadata.name` and
    `{.metadata.name}` all mean `{.metadata.name}`."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1].strip()
    if not expr.startswith((".", "$", "@", "[")):
        expr = "." + expr
    return "{" + expr + "}"
