"""`kubectl-lite VERB ...`: find the verb, import only its module, run it, and turn every
failure a user can cause into one kubectl-style line on stderr and a non-zero exit.

Exit codes: 0 success, 1 any error (as kubectl), the remote command's code for `exec`,
130 on Ctrl-C. A Python traceback means a bug in kubectl-lite, never a user error.
"""
from __future__ import annotations

import sys

from kubectl_lite.common import CLIError, Parser
from machinery import flags

# verb -> module; each module has add_<verb>(parser) and run_<verb>(args, session).
VERBS: dict[str, tuple[str, str]] = {
    "get": ("get", "Display one or many resources"),
    "describe": ("describe", "Show details of a specific resource or group of resources"),
    "apply": ("apply", "Apply a configuration to a resource by file name or stdin"),
    "create": ("apply", "Create a resource from a file or from stdin"),
    "replace": ("apply", "Replace a resource by file name or stdin"),
    "delete": ("apply", "Delete resources by file names, stdin, resources and names, or by "
                        "resources and label selector"),
    "edit": ("mutate", "Edit a resource on the server"),
    "patch": ("mutate", "Update fields of a resource"),
    "label": ("mutate", "Update the labels on a resource"),
    "annotate": ("mutate", "Update the annotations on a resource"),
    "scale": ("mutate", "Set a new size for a deployment or replica set"),
    "autoscale": ("autoscale", "Auto-scale a deployment, replica set, stateful set, or replication controller"),
    "rollout": ("rollout", "Manage the rollout of a resource"),
    "logs": ("pods", "Print the logs for a container in a pod"),
    "exec": ("pods", "Execute a command in a container"),
    "port-forward": ("portforward", "Forward one or more local ports to a pod"),
    "top": ("top", "Display resource (CPU/memory) usage"),
    "cordon": ("nodes", "Mark node as unschedulable"),
    "uncordon": ("nodes", "Mark node as schedulable"),
    "drain": ("nodes", "Drain node in preparation for maintenance"),
    "certificate": ("certificate", "Modify certificate resources"),
    "config": ("config", "Modify kubeconfig files"),
    "api-resources": ("info", "Print the supported API resources on the server"),
    "version": ("info", "Print the client and server version information"),
    "explain": ("info", "Get documentation for a resource"),
}

# Global flags that take a value (to find the verb among the arguments).
_VALUED = {"--kubeconfig", "--context", "-n", "--namespace", "-s", "--server", "--token",
           "--request-timeout", "--cache-dir", "-v", "--v", "--certificate-authority",
           "--client-certificate", "--client-key", "--tls-server-name"}


def add_global_flags(p: Parser) -> None:
    g = p.add_argument_group("global flags")
    g.add_argument("--kubeconfig", default=None, help="Path to the kubeconfig file to use")
    g.add_argument("--context", default=None, help="The name of the kubeconfig context to use")
    g.add_argument("-n", "--namespace", default=None, help="The namespace scope for this request")
    g.add_argument("-s", "--server", default=None, help="The address of the API server")
    g.add_argument("--token", default=None, help="Bearer token for authentication")
    # kubectl's overrides of the kubeconfig's TLS material (clientcmd's ConfigOverrides)
    g.add_argument("--certificate-authority", default=None,
                   help="Path to a cert file for the certificate authority")
    g.add_argument("--client-certificate", default=None, help="Path to a client certificate file for TLS")
    g.add_argument("--client-key", default=None, help="Path to a client key file for TLS")
    g.add_argument("--tls-server-name", default=None,
                   help="Server name to use for server certificate validation. If it is not "
                        "provided, the hostname used to contact the server is used")
    g.add_argument("--request-timeout", default=None,
                   help="Time to wait for a single request (e.g. 30s); 0 means the default")
    g.add_argument("--cache-dir", default=None, help=argparse_suppress())
    flags.add_logging_flags(g, formats=False)  # klog itself is imported only with -v
    p.add_bool("--insecure-skip-tls-verify", help="Do not verify the server's certificate")


def argparse_suppress() -> str:
    import argparse
    return argparse.SUPPRESS


def find_verb(argv: list[str]) -> int | None:
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return None
        if a.startswith("-"):
            if a in _VALUED:
                i += 1
        else:
            return i
        i += 1
    return None


def usage() -> str:
    lines = ["kubectl-lite controls a minik8s (or Kubernetes) cluster.", "",
             "Usage: kubectl-lite [flags] VERB [args]", "", "Verbs:"]
    lines += [f"  {v:<14} {h}" for v, (_, h) in VERBS.items()]
    lines += ["", "Use \"kubectl-lite VERB --help\" for more information about a verb."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as a Unix tool does.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str]) -> int:
    i = find_verb(argv)
    if i is None:
        if any(a in ("-h", "--help") for a in argv) or not argv:
            print(usage())
            return 0
        print("error: no verb given\n" + usage(), file=sys.stderr)
        return 1
    verb = argv[i]
    if verb == "help":
        print(usage())
        return 0
    if verb not in VERBS:
        print(f'error: unknown command "{verb}" for "kubectl-lite" (see kubectl-lite --help)',
              file=sys.stderr)
        return 1
    rest = argv[:i] + argv[i + 1:]
    trailing: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        rest, trailing = rest[:cut], rest[cut + 1:]
    session = None
    try:
        import importlib
        module = importlib.import_module(f"kubectl_lite.{VERBS[verb][0]}")
        fn = verb.replace("-", "_")
        p = Parser(prog=f"kubectl-lite {verb}", description=VERBS[verb][1])
        add_global_flags(p)
        getattr(module, f"add_{fn}")(p)
        args = p.parse(rest)
        args.command = trailing
        if args.v:
            from machinery import klog
            klog.setup(args.v)  # -v 6 and up log each request as kubectl does (client.round_trippers)
        from kubectl_lite.session import Session
        session = Session(args)
        return getattr(module, f"run_{fn}")(args, session) or 0
    except CLIError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return err.code
    except Exception as exc:  # noqa: BLE001 - user-caused failures become one line
        message = describe_error(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    finally:
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                pass


def describe_error(exc: BaseException) -> str | None:
    """kubectl's wording for errors a user can cause; None for a bug."""
    from machinery.errors import APIError
    if isinstance(exc, APIError):
        return api_error_message(exc)
    module = type(exc).__module__
    if module.startswith(("httpx", "httpcore", "websockets")):
        return connection_error_message(exc)
    if module == "client.execcred":  # kubectl: "Unable to connect ...: getting credentials: ..."
        return f"Unable to connect to the server: getting credentials: {exc}"
    if isinstance(exc, ConnectionError):
        return connection_error_message(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"error: {exc.strerror}: {exc.filename}"
    return None


def api_error_message(err, prefix: str = "") -> str:
    """`Error from server (NotFound): pods "x" not found`; 422 as `The Pod "x" is invalid: ...`;
    401 as kubectl's StandardErrorMessage words it."""
    if err.code == 401:
        return f"error: You must be logged in to the server ({err.message or 'Unauthorized'})"
    if err.code == 422 and (err.kind or err.name):
        head = f'The {err.kind} "{err.name}" is invalid'
        causes = []
        for c in err.causes:
            text = f'{c["field"]}: {c.get("message", "")}' if c.get("field") else c.get("message", "")
            if text not in causes:
                causes.append(text)
        if not causes:
            return f"{head}: {err.message}"
        if len(causes) == 1:
            return f"{head}: {causes[0]}"
        return f"{prefix}{head}: \n* " + "\n* ".join(causes)
    reason = err.reason if err.reason and type(err).__name__ != "APIError" else ""
    if reason:
        return f"Error from server ({reason}): {prefix}{err.message}"
    return f"Error from server: {prefix}{err.message}"


def connection_error_message(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    try:
        url = exc.request.url  # type: ignore[attr-defined]
        host = f"{url.host}:{url.port}" if url.port else url.host
    except (AttributeError, RuntimeError):
        host = "the server"
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, ConnectionRefusedError) or "refused" in str(chain).lower():
            return (f"The connection to the server {host} was refused - did you specify the "
                    "right host or port?")
        chain = chain.__cause__ or chain.__context__
    return f"Unable to connect to the server {host}: {text}"


if __name__ == "__main__":
    sys.exit(main())
