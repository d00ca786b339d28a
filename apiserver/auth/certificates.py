"""The admission plugins of CertificateSigningRequests (kube-apiserver's
plugin/pkg/admission/certificates: CertificateApproval, CertificateSigning and
CertificateSubjectRestriction), on by default as in Kubernetes; each is turned off by
its name in --disable-admission-plugins.

What they guarantee
- An update of `certificatesigningrequests/approval` (approving or denying) needs the
  verb `approve` on the resource `signers` of certificates.k8s.io named after the stored
  request's signerName, or after `<its domain>/*`.
- An update of `certificatesigningrequests/status` that changes status.certificate
  (issuing) needs `sign` on the signer the same way.
- Creating a request for `kubernetes.io/kube-apiserver-client` whose subject names the
  group system:masters is refused: that group passes every authorizer.
A refusal is a 403 worded as admission.NewForbidden words it:
`certificatesigningrequests.certificates.k8s.io "x" is forbidden: user not permitted to
approve requests with signerName "example.com/s"`.

Pure code over the server's authorizer; no I/O.
"""
from __future__ import annotations

from typing import Any

from apiserver.auth.authorizer import Attributes, Authorizer, Decision, UserInfo, forbidden_error
from apiserver.strategies.certificates import request_bytes
from machinery import pki

GROUP = "certificates.k8s.io"
RESOURCE = "certificatesigningrequests"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"


def authorized_for_signer(authorizer: Authorizer, user: UserInfo, verb: str, signer: str) -> bool:
    """certificates.IsAuthorizedForSignerName: `verb` on signers/<signer>, else on
    signers/<domain>/*."""
    for name in (signer, signer.split("/")[0] + "/*"):
        decision, _ = authorizer.authorize(Attributes(user, verb, api_group=GROUP, api_version="*",
                                                      resource="signers", name=name))
        if decision is Decision.ALLOW:
            return True
    return False


def _spec(obj: Any) -> dict:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    return spec if isinstance(spec, dict) else {}


def _name(attrs: Attributes, obj: Any) -> str:
    md = obj.get("metadata") if isinstance(obj, dict) else None
    return attrs.name or (md or {}).get("name") or (md or {}).get("generateName") or ""


class CertificateAdmission:
    """The three plugins as one (they share the authorizer and the resource check)."""

    def __init__(self, authorizer: Authorizer, *, disabled: frozenset[str] = frozenset()):
        self.authorizer = authorizer
        self.approval = "CertificateApproval" not in disabled
        self.signing = "CertificateSigning" not in disabled
        self.subject = "CertificateSubjectRestriction" not in disabled

    async def admit(self, user: UserInfo, attrs: Attributes, obj: dict | None,
                    old: dict | None) -> None:
        if attrs.api_group != GROUP or attrs.resource != RESOURCE or not attrs.resource_request:
            return
        if attrs.subresource == "approval" and old is not None and obj is not None:
            if self.approval:  # the stored signer, not the sent one: a request cannot change it
                self._check(user, attrs, "approve", old, "approve")
        elif attrs.subresource == "status" and old is not None and obj is not None:
            if self.signing and (obj.get("status") or {}).get("certificate") != \
                    (old.get("status") or {}).get("certificate"):
                self._check(user, attrs, "sign", old, "sign")
        elif attrs.verb == "create" and not attrs.subresource and obj is not None and self.subject:
            self._subject_restriction(attrs, obj)

    def _check(self, user: UserInfo, attrs: Attributes, verb: str, old: dict, what: str) -> None:
        signer = _spec(old).get("signerName") or ""
        if not authorized_for_signer(self.authorizer, user, verb, signer):
            raise forbidden_error(attrs.resource, attrs.api_group, _name(attrs, old),
                                  f'user not permitted to {what} requests with signerName "{signer}"')

    def _subject_restriction(self, attrs: Attributes, obj: dict) -> None:
        signer = _spec(obj).get("signerName")
        if signer != CLIENT_SIGNER:
            return
        try:
            csr = pki.load_csr(request_bytes(obj))
        except ValueError as e:
            raise forbidden_error(attrs.resource, attrs.api_group, _name(attrs, obj),
                                  f"failed to parse CSR: {e}") from None
        if "system:masters" in pki.csr_subject(csr)[1]:
            raise forbidden_error(attrs.resource, attrs.api_group, _name(attrs, obj),
                                  f"use of {signer} signer with system:masters group is not allowed")
