"""`config view|current-context|get-contexts|use-context|set-context`: read and edit
kubeconfig files through `client.kubeconfig` (never the server).

Reads merge every file as kubectl does (--kubeconfig, else $KUBECONFIG's list, else
~/.kube/config). A change is written to one file: --kubeconfig; else, of $KUBECONFIG's
files, the one that defines the context being changed (for use-context, the one that
sets current-context), else the first; else ~/.kube/config. Files are written atomically
with mode 0600 (they hold credentials).
"""
from __future__ import annotations

import os
import sys
from typing import Any

from kubectl_lite.common import CLIError, Parser

ACTIONS = ("view", "current-context", "get-contexts", "use-context", "use", "set-context",
           "get-clusters", "get-users", "delete-context")
_SECRET_DATA = ("certificate-authority-data", "client-certificate-data", "client-key-data")


def add_config(p: Parser) -> None:
    p.add_argument("action", choices=ACTIONS, metavar="{" + "|".join(ACTIONS) + "}")
    p.add_argument("args", nargs="*")
    p.add_bool("--minify", help="view: only what the current context uses")
    p.add_bool("--raw", help="view: show credentials and certificate data")
    p.add_bool("--flatten", help="view: (accepted; files are already merged)")
    p.add_argument("-o", "--output", default="yaml")
    p.add_bool("--current", help="set-context: change the current context")
    p.add_argument("--cluster", default=None)
    p.add_argument("--user", default=None)
    p.add_bool("--no-headers")


def _load(s: Any, path: str | None = None):
    from client.kubeconfig import load
    try:
        return load(path) if path else s.kubeconfig(must_exist=False)
    except OSError as exc:
        raise CLIError(f"cannot read kubeconfig: {exc}") from None


def _target_file(s: Any, *, context: str | None = None, current: bool = False) -> str:
    if s.opts.kubeconfig:
        return s.opts.kubeconfig
    paths = s.kubeconfig_paths()
    existing = [p for p in paths if os.path.exists(p)]
    for p in existing:
        cfg = _load(s, p)
        if current and cfg.current_context:
            return p
        if context and context in cfg.contexts:
            return p
    return existing[0] if existing else paths[0]


def run_config(args: Any, s: Any) -> int:
    fn = {"view": view, "current-context": current_context, "get-contexts": get_contexts,
          "use-context": use_context, "use": use_context, "set-context": set_context,
          "get-clusters": get_clusters, "get-users": get_users,
          "delete-context": delete_context}[args.action]
    return fn(args, s)


def view(args: Any, s: Any) -> int:
    cfg = _load(s)
    d = cfg.to_dict()
    if args.minify:
        name = s.opts.context or cfg.current_context
        if not name:
            raise CLIError("current-context must exist in order to minify")
        ctx = cfg.contexts.get(name)
        if ctx is None:
            raise CLIError(f'cannot locate context {name}')
        d["contexts"] = [c for c in d["contexts"] if c["name"] == name]
        d["clusters"] = [c for c in d["clusters"] if c["name"] == ctx.get("cluster")]
        d["users"] = [u for u in d["users"] if u["name"] == ctx.get("user")]
        d["current-context"] = name
    if not args.raw:
        for section, body in (("clusters", "cluster"), ("users", "user")):
            for item in d[section]:
                entry = item[body]
                for k in _SECRET_DATA:
                    if k in entry:
                        entry[k] = "DATA+OMITTED"
                for k in ("token", "password"):
                    if k in entry:
                        entry[k] = "REDACTED"
    from kubectl_lite.printers import to_json, to_yaml
    if args.output == "json":
        sys.stdout.write(to_json(d))
    elif args.output == "yaml":
        sys.stdout.write(to_yaml(d))
    elif args.output.startswith("jsonpath="):
        from kubectl_lite.jsonpath import Template
        sys.stdout.write(Template(args.output[9:]).render(d))
    else:
        raise CLIError(f'unsupported output format "{args.output}": use yaml, json or jsonpath=')
    return 0


def current_context(args: Any, s: Any) -> int:
    cfg = _load(s)
    if not cfg.current_context:
        raise CLIError("current-context is not set")
    print(cfg.current_context)
    return 0


def get_contexts(args: Any, s: Any) -> int:
    from kubectl_lite.printers import print_lines, tabwrite
    cfg = _load(s)
    names = args.args or sorted(cfg.contexts)
    missing = [n for n in names if n not in cfg.contexts]
    if missing:
        raise CLIError(f'context {missing[0]} not found')
    if args.output == "name":
        print_lines(names)
        return 0
    lines = [] if args.no_headers else ["CURRENT\tNAME\tCLUSTER\tAUTHINFO\tNAMESPACE"]
    for n in names:
        c = cfg.contexts[n]
        lines.append("\t".join(["*" if n == cfg.current_context else "", n, c.get("cluster", ""),
                                c.get("user", ""), c.get("namespace", "")]))
    print_lines(tabwrite(lines))
    return 0


def get_clusters(args: Any, s: Any) -> int:
    print("NAME")
    for n in sorted(_load(s).clusters):
        print(n)
    return 0


def get_users(args: Any, s: Any) -> int:
    print("NAME")
    for n in sorted(_load(s).users):
        print(n)
    return 0


def use_context(args: Any, s: Any) -> int:
    if len(args.args) != 1:
        raise CLIError("Unexpected args: use-context takes exactly one context name")
    name = args.args[0]
    if name not in _load(s).contexts:
        raise CLIError(f'no context exists with the name: "{name}"')
    path = _target_file(s, current=True)
    cfg = _load(s, path) if os.path.exists(path) else _empty()
    cfg.current_context = name
    cfg.save(path)
    print(f'Switched to context "{name}".')
    return 0


def set_context(args: Any, s: Any) -> int:
    if args.current:
        if args.args:
            raise CLIError("you cannot specify a context name and --current")
        name = _load(s).current_context
        if not name:
            raise CLIError("no current context is set")
    elif len(args.args) != 1:
        raise CLIError("set-context takes one context name (or --current)")
    else:
        name = args.args[0]
    path = _target_file(s, context=name)
    cfg = _load(s, path) if os.path.exists(path) else _empty()
    created = name not in cfg.contexts
    entry = cfg.contexts.setdefault(name, {})
    for key, value in (("cluster", args.cluster), ("user", args.user), ("namespace", args.namespace)):
        if value is not None:
            if value == "":
                entry.pop(key, None)
            else:
                entry[key] = value
    cfg.save(path)
    print(f'Context "{name}" {"created" if created else "modified"}.')
    return 0


def delete_context(args: Any, s: Any) -> int:
    if len(args.args) != 1:
        raise CLIError("delete-context takes one context name")
    name = args.args[0]
    path = _target_file(s, context=name)
    cfg = _load(s, path) if os.path.exists(path) else _empty()
    if name not in cfg.contexts:
        raise CLIError(f"cannot delete context {name}, not in {path}")
    if cfg.current_context == name:
        print("warning: this removed your active context, use \"kubectl-lite config "
              "use-context\" to select a different one", file=sys.stderr)
    del cfg.contexts[name]
    cfg.save(path)
    print(f"deleted context {name} from {path}")
    return 0


def _empty():
    from client.kubeconfig import KubeConfig
    return KubeConfig()
