"""Reading manifests (`-f FILE|DIR|-`, `-R`) and validating them before anything is sent.

- A file holds YAML documents (`---` separated) or JSON; `kind: List` (or any `*List`
  with `items`) is expanded into its items. Empty documents are skipped; documents are
  numbered from 1 in the order they appear in their file, so a message can name one.
- A directory contributes its `.yaml`, `.yml` and `.json` files in name order (its
  subdirectories too with `-R`).
- YAML means what it means to kubectl (machinery.yamlutil: go-yaml's rules, so an
  unquoted timestamp stays a string) and nothing but JSON types comes out.
- `validate` checks each document against the Kubernetes 1.32 JSON schemas shipped by
  `kubernetes-validate`, strictly (unknown fields are errors), and returns every
  problem of every document, each naming the file, the document, the kind/name and the
  field path; callers send nothing when it returns any.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from kubectl_lite.common import CLIError

EXTENSIONS = (".yaml", ".yml", ".json")
SCHEMA_VERSION = "v1.32.0"


@dataclass
class Document:
    obj: dict
    source: str
    index: int

    @property
    def what(self) -> str:
        md = self.obj.get("metadata") or {}
        name = md.get("name") or md.get("generateName") or ""
        kind = self.obj.get("kind") or "<no kind>"
        return f'{kind} "{name}"' if name else kind

    @property
    def where(self) -> str:
        return f'"{self.source}" (document {self.index}, {self.what})'


def read_documents(paths: list[str], *, recursive: bool = False) -> list[Document]:
    docs: list[Document] = []
    for path in paths:
        for source, text in _sources(path, recursive):
            docs.extend(parse_text(text, source))
    return docs


def _sources(path: str, recursive: bool):
    if path == "-":
        yield "STDIN", sys.stdin.read()
        return
    if path.startswith(("http://", "https://")):
        raise CLIError(f'reading manifests from URLs is not supported: "{path}"')
    if not os.path.exists(path):
        raise CLIError(f'the path "{path}" does not exist')
    if os.path.isdir(path):
        found = False
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(EXTENSIONS):
                    found = True
                    yield from _sources(os.path.join(root, name), False)
            if not recursive:
                break
        if not found:
            raise CLIError(f'error reading "{path}": no manifest files (.yaml, .yml, .json) in it')
        return
    try:
        with open(path, encoding="utf-8") as f:
            yield path, f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f'error reading "{path}": {getattr(exc, "strerror", None) or exc}') from None


def parse_text(text: str, source: str) -> list[Document]:
    stripped = text.lstrip()
    raw: list[Any]
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
            raw = value if isinstance(value, list) else [value]
        except ValueError:
            raw = _yaml_documents(text, source)
    else:
        raw = _yaml_documents(text, source)
    docs: list[Document] = []
    for i, obj in enumerate(raw, 1):
        if obj is None or obj == {}:
            continue
        if not isinstance(obj, dict):
            raise CLIError(f'error parsing "{source}": document {i} is not an object '
                           f"(it is a {type(obj).__name__})")
        if isinstance(obj.get("items"), list) and str(obj.get("kind", "")).endswith("List"):
            for item in obj["items"]:
                if not isinstance(item, dict):
                    raise CLIError(f'error parsing "{source}": document {i} has an item '
                                   "that is not an object")
                docs.append(Document(item, source, i))
            continue
        docs.append(Document(obj, source, i))
    return docs


def _yaml_documents(text: str, source: str) -> list[Any]:
    import yaml  # here, not at the top: a command that reads no YAML starts faster

    from machinery import yamlutil
    try:
        return list(yamlutil.load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise CLIError(f'error parsing "{source}": {at}{problem}') from None


# -- validation --------------------------------------------------------------------------

class Validator:
    """Kubernetes 1.32 schemas, strict, one compiled validator per kind (built lazily)."""

    def __init__(self) -> None:
        import importlib.resources
        self.dir = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
                    / f"{SCHEMA_VERSION}-local-strict")
        self._registry: Any = None
        self._kinds: dict[tuple[str, str], Any] = {}

    def _validator(self, kind: str, api_version: str) -> Any:
        key = (kind, api_version)
        if key not in self._kinds:
            import jsonschema
            from referencing import Registry, Resource
            group, _, version = api_version.rpartition("/")
            suffix = f"{group.split('.')[0]}-{version}" if group else version
            path = self.dir / f"{kind.lower()}-{suffix}.json"
            if not path.is_file():
                self._kinds[key] = None
            else:
                if self._registry is None:
                    defs = json.loads((self.dir / "_definitions.json").read_text())
                    self._registry = Registry().with_resource(defs["$id"],
                                                              Resource.from_contents(defs))
                schema = json.loads(path.read_text())
                registry = self._registry.with_resource(schema["$id"], Resource.from_contents(schema))
                self._kinds[key] = jsonschema.Draft202012Validator(schema, registry=registry)
        return self._kinds[key]

    def problems(self, obj: dict, *, need_name: bool = True) -> list[str]:
        out: list[str] = []
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        for f, v in (("apiVersion", api_version), ("kind", kind)):
            if not isinstance(v, str) or not v:
                out.append(f"{f}: Required value: {f} not set")
        if out:
            return out
        md = obj.get("metadata")
        if need_name and not (isinstance(md, dict) and (md.get("name") or md.get("generateName"))):
            out.append("metadata.name: Required value: name or generateName is required")
        v = self._validator(kind, api_version)
        if v is None:
            return out  # not a kind Kubernetes 1.32 has: the server decides
        for err in sorted(v.iter_errors(_strip_nulls(obj)), key=lambda e: list(e.absolute_path)):
            out.extend(_describe(err))
        return out


def _describe(err: Any) -> list[str]:
    path = _path(err.absolute_path)
    inst = err.instance
    if err.validator == "additionalProperties" and err.validator_value is False:
        known = err.schema.get("properties", {})
        return [f'{_join(path, k)}: unknown field "{_join(path, k)}"'
                for k in inst if k not in known]
    if err.validator == "required":
        return [f"{_join(path, k)}: Required value" for k in err.validator_value
                if isinstance(inst, dict) and k not in inst]
    shown = json.dumps(inst, separators=(",", ":"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if err.validator == "type":
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return [f"{path or '<root>'}: Invalid value: {shown}: must be of type "
                f"{' or '.join(t for t in types if t != 'null')}"]
    if err.validator == "enum":
        allowed = ", ".join(json.dumps(a) for a in err.validator_value if a is not None)
        return [f"{path or '<root>'}: Unsupported value: {shown}: supported values: {allowed}"]
    if err.validator == "oneOf" and err.context and all(c.validator == "type" for c in err.context):
        types = [t for c in err.context for t in (c.validator_value if isinstance(c.validator_value, list)
                                                 else [c.validator_value]) if t != "null"]
        return [f"{path or '<root>'}: Invalid value: {shown}: must be of type {' or '.join(types)}"]
    return [f"{path or '<root>'}: Invalid value: {shown}: {err.message}"]


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _strip_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_nulls(x) for x in v]
    return v


def validate(docs: list[Document], *, need_name: bool = True) -> list[str]:
    """Every problem of every document, one line each; [] when all are valid."""
    v = Validator()
    out = []
    for d in docs:
        for problem in v.problems(d.obj, need_name=need_name):
            out.append(f"error validating {d.where}: {problem}")
    return out


def check(docs: list[Document], *, verb: str = "apply", enabled: bool = True,
          need_name: bool = True) -> None:
    """Validate (unless --validate=false) and raise one error listing every problem."""
    if not docs:
        raise CLIError(f"no objects passed to {verb}")
    if not enabled:
        return
    problems = validate(docs, need_name=need_name)
    if problems:
        done = {"apply": "applied", "create": "created", "replace": "replaced"}.get(verb, verb)
        raise CLIError("\n".join(problems[:1] + [f"error: {p}" for p in problems[1:]]) +
                       f"\nerror: nothing was {done}: fix the manifest, or pass "
                       "--validate=false to skip validation")
