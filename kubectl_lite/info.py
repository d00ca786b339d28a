"""`version`, `api-resources` and `explain`: what the client and the server are.

`version --client` needs no server and imports nothing beyond the standard library.
`api-resources` reads the server's discovery documents; `explain` reads its OpenAPI v3
documents (`/openapi/v3`, then the group-version document it points to) and prints a
kind's or a field's schema in kubectl's plain-text layout.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from kubectl_lite import __version__
from kubectl_lite.common import CLIError, Parser
from machinery.platforms import goarch, goos


def _client_version() -> dict:
    return {"major": "0", "minor": "1", "gitVersion": __version__, "gitCommit": "",
            "gitTreeState": "clean", "goVersion": f"python{sys.version.split()[0]}",
            "compiler": "cpython", "platform": f"{goos()}/{goarch()}"}


# -- version -----------------------------------------------------------------------------

def add_version(p: Parser) -> None:
    p.add_bool("--client", help="Only the client version (no server needed)")
    p.add_argument("-o", "--output", default="", choices=("", "yaml", "json"))


def run_version(args: Any, s: Any) -> int:
    info: dict[str, Any] = {"clientVersion": _client_version()}
    if not args.client:
        try:
            info["serverVersion"] = s.client.request("GET", "/version")
        except Exception as err:  # noqa: BLE001 - print the client version, then the error
            if args.output:
                raise
            print(f"Client Version: {__version__}")
            raise err
    if args.output == "json":
        print(json.dumps(info, indent=2))
        return 0
    if args.output == "yaml":
        from kubectl_lite.printers import to_yaml
        sys.stdout.write(to_yaml(info))
        return 0
    print(f"Client Version: {__version__}")
    if "serverVersion" in info:
        print(f"Server Version: {info['serverVersion'].get('gitVersion', '')}")
    return 0


# -- api-resources -----------------------------------------------------------------------

def add_api_resources(p: Parser) -> None:
    p.add_argument("--namespaced", default=None, help="true|false: only (non-)namespaced kinds")
    p.add_argument("--api-group", default=None, help="Only this API group ('' for core)")
    p.add_argument("-o", "--output", default="", choices=("", "wide", "name"))
    p.add_bool("--no-headers")
    p.add_argument("--sort-by", default=None, choices=(None, "name", "kind"))
    p.add_argument("--verbs", action="append", default=[], help="Only kinds supporting these verbs")


def discovery(s: Any) -> list[dict]:
    """Every top-level resource: name, shortNames, apiVersion, namespaced, kind, verbs, group."""
    docs = [("", s.client.request("GET", "/api/v1"))]
    for g in s.client.request("GET", "/apis").get("groups", []):
        v = g.get("preferredVersion") or (g.get("versions") or [{}])[0]
        docs.append((g.get("name", ""), s.client.request("GET", f"/apis/{v['groupVersion']}")))
    out = []
    for group, doc in docs:
        for e in doc.get("resources", []):
            if "/" in e["name"]:
                continue
            out.append({**e, "group": group, "apiVersion": doc["groupVersion"]})
    return out


def run_api_resources(args: Any, s: Any) -> int:
    from kubectl_lite.printers import print_lines, tabwrite
    rows = discovery(s)
    if args.namespaced is not None:
        want = str(args.namespaced).lower() in ("true", "1", "t")
        rows = [r for r in rows if bool(r.get("namespaced")) == want]
    if args.api_group is not None:
        rows = [r for r in rows if r["group"] == args.api_group]
    if args.verbs:
        verbs = {v for spec in args.verbs for v in spec.split(",") if v}
        rows = [r for r in rows if verbs <= set(r.get("verbs") or [])]
    groups = []
    for r in rows:
        if r["group"] not in groups:
            groups.append(r["group"])
    order = {g: i for i, g in enumerate(sorted(groups, key=lambda g: (g != "", g)))}
    if args.sort_by == "kind":
        rows.sort(key=lambda r: r["kind"])
    elif args.sort_by == "name":
        rows.sort(key=lambda r: r["name"])
    else:
        rows.sort(key=lambda r: (order[r["group"]], r["name"]))
    if args.output == "name":
        print_lines(r["name"] + (f".{r['group']}" if r["group"] else "") for r in rows)
        return 0
    header = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    if args.output == "wide":
        header += ["VERBS", "CATEGORIES"]
    lines = [] if args.no_headers else ["\t".join(header)]
    for r in rows:
        cells = [r["name"], ",".join(r.get("shortNames") or []), r["apiVersion"],
                 "true" if r.get("namespaced") else "false", r["kind"]]
        if args.output == "wide":
            cells += ["[" + " ".join(r.get("verbs") or []) + "]", ",".join(r.get("categories") or [])]
        lines.append("\t".join(cells))
    print_lines(tabwrite(lines))
    return 0


# -- explain -----------------------------------------------------------------------------

def add_explain(p: Parser) -> None:
    p.add_argument("target", metavar="TYPE[.FIELD...]")
    p.add_bool("--recursive", help="Print the fields of fields, recursively (names and types)")
    p.add_argument("--api-version", default=None, help="Which group/version of the kind")
    p.add_argument("-o", "--output", default="plaintext", choices=("plaintext",))


def wrap(text: str, indent: int, width: int = 80) -> list[str]:
    """Greedy word wrap of each line of `text` (long words stay whole), indented."""
    pad = " " * indent
    out: list[str] = []
    for line in text.split("\n"):
        words = line.split(" ")
        cur = ""
        for wd in words:
            if cur and len(cur) + 1 + len(wd) > width - indent:
                out.append(pad + cur.rstrip())
                cur = wd
            else:
                cur = f"{cur} {wd}" if cur else wd
        out.append(pad + cur)
    return out


class Schemas:
    def __init__(self, doc: dict):
        self.schemas = (doc.get("components") or {}).get("schemas") or {}

    def resolve(self, schema: dict) -> tuple[dict, str]:
        """Follow $ref and single-element allOf: (schema, name of the referenced type or '')."""
        name = ""
        for _ in range(20):
            if "$ref" in schema:
                name = schema["$ref"].rsplit("/", 1)[-1]
                schema = self.schemas.get(name, {})
            elif len(schema.get("allOf") or []) == 1 and not schema.get("properties"):
                schema = schema["allOf"][0]
            else:
                break
        return schema, name

    def type_name(self, schema: dict) -> str:
        if schema.get("items"):
            return "[]" + self.type_name(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            return "map[string]" + self.type_name(schema["additionalProperties"])
        if len(schema.get("allOf") or []) == 1 and not schema.get("properties"):
            return self.type_name(schema["allOf"][0])
        if "$ref" in schema:
            target, name = self.resolve(schema)
            if target.get("type") and target.get("type") != "object":
                return self.type_name(target)
            return name.rsplit(".", 1)[-1] or "Object"
        if schema.get("type"):
            # kubectl's template capitalizes a plain object, as the old explain did
            return "Object" if schema["type"] == "object" else schema["type"]
        if schema.get("x-kubernetes-int-or-string"):
            return "IntOrString"
        return "Object"

    def descriptions(self, schema: dict) -> list[str]:
        """A field's own description, then its type's (as kubectl shows both)."""
        out = [schema["description"]] if schema.get("description") else []
        target = schema
        while True:
            if target.get("items"):
                target = target["items"]
            elif len(target.get("allOf") or []) == 1 and not target.get("properties"):
                target = target["allOf"][0]
                continue
            if "$ref" in target:
                resolved, _ = self.resolve(target)
                if resolved.get("description") and resolved.get("description") not in out:
                    out.append(resolved["description"])
            break
        return out

    def fields_of(self, schema: dict) -> tuple[dict, list[str]]:
        target = schema
        for _ in range(20):
            if target.get("items"):
                target = target["items"]
            target, _ = self.resolve(target)
            if not target.get("items"):
                break
        return target.get("properties") or {}, target.get("required") or []


def run_explain(args: Any, s: Any) -> int:
    parts = args.target.split(".")
    r = s.resource(parts[0])
    path = [p for p in parts[1:] if p]
    if r.group and path[:len(r.group.split("."))] == r.group.split("."):
        path = path[len(r.group.split(".")):]  # `deployments.apps.spec`
    group, version = r.group, r.version
    if args.api_version:
        group, _, version = args.api_version.rpartition("/")
    key = f"apis/{group}/{version}" if group else f"api/{version}"
    index = s.client.request("GET", "/openapi/v3")
    entry = (index.get("paths") or {}).get(key)
    if entry is None:
        raise CLIError(f"couldn't find resource for \"{r.group + '/' if r.group else ''}"
                       f"{r.version}, Kind={r.kind}\": the server has no OpenAPI document for {key}")
    url = entry["serverRelativeURL"]
    doc = s.client.request("GET", url.split("?")[0], params=dict(
        p.split("=", 1) for p in url.split("?", 1)[1].split("&")) if "?" in url else None)
    sch = Schemas(doc)
    root = None
    for schema in sch.schemas.values():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (group, version, r.kind):
                root = schema
    if root is None:
        raise CLIError(f"couldn't find resource for \"{group + '/' if group else ''}{version}, "
                       f"Kind={r.kind}\"")
    schema, field_type = root, None
    for name in path:
        props, _ = sch.fields_of(schema)
        if name not in props:
            raise CLIError(f'field "{name}" does not exist')
        schema = props[name]
    lines = []
    if group:
        lines.append(f"GROUP:      {group}")
    lines += [f"KIND:       {r.kind}", f"VERSION:    {version}", ""]
    if path:
        field_type = sch.type_name(schema)
        lines += [f"FIELD: {path[-1]} <{field_type}>", "", ""]
    lines.append("DESCRIPTION:")
    descs = sch.descriptions(schema) if path else [root.get("description", "")]
    for d in descs:
        lines += wrap(d, 4)
    lines.append("    ")
    props, required = sch.fields_of(schema)
    if props:
        lines.append("FIELDS:")
        if args.recursive:
            _recursive(sch, props, required, 1, lines, set())
        else:
            for name in sorted(props):
                f = props[name]
                lines.append(f"  {name}\t<{sch.type_name(f)}>" + (" -required-" if name in required else ""))
                enum = _enum(sch, f)
                if enum:
                    lines.append(f"  enum: {enum}")
                for d in [f.get("description")] if f.get("description") else []:
                    lines += wrap(d, 4)
                lines.append("")
    lines += ["", ""]
    sys.stdout.write("\n".join(lines))
    return 0


def _enum(sch: Schemas, f: dict) -> str:
    values = f.get("enum")
    if not values:
        target, _ = sch.resolve(f)
        values = target.get("enum")
    if not values:
        return ""
    text = ", ".join(str(v) for v in values)
    return text


def _recursive(sch: Schemas, props: dict, required: list[str], level: int, lines: list[str],
               seen: set) -> None:
    for name in sorted(props):
        f = props[name]
        lines.append("  " * level + f"{name}\t<{sch.type_name(f)}>" +
                     (" -required-" if name in required else ""))
        enum = _enum(sch, f)
        if enum:
            lines.append("  " * level + f"enum: {enum}")
        sub, sub_required = sch.fields_of(f)
        ref = sch.type_name(f)
        if sub and ref not in seen:
            _recursive(sch, sub, sub_required, level + 1, lines, seen | {ref})
