"""`certificate approve|deny NAME...`, as kubectl's: add the Approved (or Denied) condition
through the CSR's `approval` subresource, retried on a conflict; a request that already
has that condition is left alone (and not printed) unless --force."""
from __future__ import annotations

from typing import Any

from kubectl_lite.common import CLIError, Parser
from machinery import errors, times


def add_certificate(p: Parser) -> None:
    p.add_argument("action", choices=("approve", "deny"), metavar="{approve|deny}")
    p.add_argument("names", nargs="*", metavar="CSR_NAME")
    p.add_bool("--force", help="Update the CSR even if it is already approved (or denied)")


def run_certificate(args: Any, s: Any) -> int:
    if not args.names:
        raise CLIError("one or more CSRs must be specified as <name>")
    kind, verb = ("Approved", "approved") if args.action == "approve" else ("Denied", "denied")
    reason = "KubectlApprove" if kind == "Approved" else "KubectlDeny"
    r = s.resource("certificatesigningrequests")
    for name in args.names:
        for _ in range(5):  # retry.RetryOnConflict's default steps
            csr = s.client.get(r, name)
            conditions = (csr.get("status") or {}).get("conditions") or []
            if any(c.get("type") == kind for c in conditions) and not args.force:
                break
            csr.setdefault("status", {})["conditions"] = conditions + [{
                "type": kind, "status": "True", "reason": reason, "lastUpdateTime": times.rfc3339(),
                "message": f"This CSR was {verb} by kubectl certificate {args.action}."}]
            try:
                s.client.update(csr, subresource="approval")
            except errors.Conflict:
                continue
            print(f"certificatesigningrequest.certificates.k8s.io/{name} {verb}")
            break
    return 0
