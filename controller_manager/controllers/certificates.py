"""The CertificateSigningRequest controllers of kube-controller-manager
(pkg/controller/certificates): csrapproving, csrsigning and csrcleaner.

What they guarantee
- csrapproving approves a pending, unissued request for the signer
  `kubernetes.io/kube-apiserver-client-kubelet` that is a kubelet client certificate
  (subject O exactly [system:nodes], CN `system:node:<name>`, no SANs, usages exactly
  {digital signature, client auth} or {digital signature, key encipherment, client auth})
  once a SubjectAccessReview for the requestor (spec.username, uid, groups, extra) allows
  `create` on `certificatesigningrequests/selfnodeclient` (when the requestor is the
  node itself: username == CN) or `certificatesigningrequests/nodeclient`. The condition
  is Kubernetes': Approved, reason AutoApproved, message "Auto approving (self) kubelet
  client certificate after SubjectAccessReview.". A request it recognises but may not
  approve stays pending and is looked at again with backoff (the requestor may be
  granted the role later); anything else it leaves alone, for a person or another
  approver.
- csrsigning issues, with the cluster CA of --cluster-signing-cert-file and
  --cluster-signing-key-file, every approved, not failed, unissued request for
  `kubernetes.io/kube-apiserver-client`, `kube-apiserver-client-kubelet`,
  `kubelet-serving` and `legacy-unknown`, after the checks Kubernetes makes per signer
  (kubelet client and serving certificates as above and as ValidateKubeletServingCSR;
  an API client certificate only digital signature, key encipherment and client auth,
  which it must have). A request that fails them gets a Failed condition (reason
  SignerValidationFailure) and no certificate. The certificate lives
  --cluster-signing-duration (8760h), or spec.expirationSeconds when that is shorter
  (never under 10 minutes), back-dated as machinery.pki.sign_request says. Requests for
  other signers are not touched. Without the CA files it signs nothing, as
  kube-controller-manager skips it.
- csrcleaner deletes a request an hour after it was approved and issued, denied or
  failed (by the condition's lastUpdateTime), 24 hours after its creation while no
  condition was ever set, and as soon as its issued certificate has expired. Instead of
  Kubernetes' hourly poll, each request is looked at again when its next deadline
  comes (the queue's add_after), which deletes at the same moments or sooner.

Keys are CSR names (cluster-scoped). Concurrency: one asyncio loop; a key is never
reconciled by two workers at once.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from controller_manager.controller import Controller, Requeue
from machinery import errors, pki, times

log = logging.getLogger("minik8s.controller.certificates")

GROUP = "certificates.k8s.io"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"

_KUBELET_CLIENT_USAGES = ({"digital signature", "key encipherment", "client auth"},
                          {"digital signature", "client auth"})
_KUBELET_SERVING_USAGES = ({"digital signature", "key encipherment", "server auth"},
                           {"digital signature", "server auth"})
DEFAULT_SIGNING_DURATION = 8760 * 3600.0  # --cluster-signing-duration, one year
_MIN_DURATION = 600.0  # the signer's floor: twice its five minutes of back-dating


# -- reading a request ---------------------------------------------------------------------

def conditions(csr: dict) -> list[dict]:
    return [c for c in (csr.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]


def has_condition(csr: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status", "True") == "True" for c in conditions(csr))


def parse_request(csr: dict) -> x509.CertificateSigningRequest:
    """The request's PKCS#10 CSR; ValueError if it cannot be read (validation makes that
    impossible for a stored object)."""
    try:
        data = base64.b64decode((csr.get("spec") or {}).get("request") or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("spec.request is not base64") from None
    return pki.load_csr(data)


def kubelet_client_problem(req: x509.CertificateSigningRequest, usages: set[str]) -> str | None:
    """ValidateKubeletClientCSR, in its order: why `req` is no kubelet client certificate."""
    cn, orgs = pki.csr_subject(req)
    sans = pki.csr_sans(req)
    if list(orgs) != ["system:nodes"]:
        return "subject organization is not system:nodes"
    for kind, what in (("dns", "DNS"), ("email", "Email"), ("ip", "IP"), ("uri", "URI")):
        if sans[kind]:
            return f"{what} subjectAltNames are not allowed"
    if not cn.startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    if usages not in _KUBELET_CLIENT_USAGES:
        return "usages did not match [client auth digital signature key encipherment]"
    return None


def kubelet_serving_problem(req: x509.CertificateSigningRequest, usages: set[str]) -> str | None:
    """ValidateKubeletServingCSR."""
    cn, orgs = pki.csr_subject(req)
    sans = pki.csr_sans(req)
    if list(orgs) != ["system:nodes"]:
        return "subject organization is not system:nodes"
    if not sans["dns"] and not sans["ip"]:
        return "DNS or IP subjectAltName is required"
    if sans["email"]:
        return "Email subjectAltNames are not allowed"
    if sans["uri"]:
        return "URI subjectAltNames are not allowed"
    if usages not in _KUBELET_SERVING_USAGES:
        return "usages did not match [digital signature key encipherment server auth]"
    if not cn.startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    return None


def api_client_problem(usages: list[str]) -> str | None:
    """validAPIServerClientUsages."""
    for u in usages:
        if u not in ("digital signature", "key encipherment", "client auth"):
            return f"invalid usage for client certificate: {u}"
    if "client auth" not in usages:
        return "missing required usage for client certificate: client auth"
    return None


def _usages(csr: dict) -> list[str]:
    return [u for u in (csr.get("spec") or {}).get("usages") or [] if isinstance(u, str)]


class NotApproved(Requeue):
    """A recognised request whose requestor the SubjectAccessReviews did not allow
    (Kubernetes' IgnorableError): looked at again with backoff."""


# -- csrapproving --------------------------------------------------------------------------

# (SubjectAccessReview subresource, success message), tried in this order.
_RECOGNIZERS = (
    ("selfnodeclient", "Auto approving self kubelet client certificate after SubjectAccessReview."),
    ("nodeclient", "Auto approving kubelet client certificate after SubjectAccessReview."),
)


class CSRApprovingController(Controller):
    name = "csrapproving"

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.csrs = self.watch(factory.informer("certificatesigningrequests"))

    async def reconcile(self, key) -> None:
        csr = self.csrs.store.get(key)
        if csr is None or (csr.get("status") or {}).get("certificate"):
            return
        if has_condition(csr, "Approved") or has_condition(csr, "Denied"):
            return
        spec = csr.get("spec") or {}
        if spec.get("signerName") != KUBELET_CLIENT_SIGNER:
            return
        try:
            req = parse_request(csr)
        except ValueError as e:
            log.warning("%s: %s: %s", self.name, key, e)
            return
        if kubelet_client_problem(req, set(_usages(csr))) is not None:
            return
        tried = []
        for subresource, message in _RECOGNIZERS:
            if subresource == "selfnodeclient" and spec.get("username") != pki.csr_subject(req)[0]:
                continue
            tried.append(subresource)
            if await self._allowed(spec, subresource):
                approved = dict(csr, status={**(csr.get("status") or {}), "conditions": [
                    *conditions(csr), {"type": "Approved", "status": "True", "reason": "AutoApproved",
                                       "message": message}]})
                await self.client.update(approved, subresource="approval")
                log.info("%s: approved %s (%s)", self.name, key, subresource)
                return
        raise NotApproved(f"recognized csr {key!r} as {tried} but subject access review was not approved")

    async def _allowed(self, spec: dict, subresource: str) -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": spec.get("username", ""), "uid": spec.get("uid", ""),
                           "groups": spec.get("groups") or [], "extra": spec.get("extra") or {},
                           "resourceAttributes": {"group": GROUP, "version": "*", "verb": "create",
                                                  "resource": "certificatesigningrequests",
                                                  "subresource": subresource}}}
        out = await self.client.create(review)
        return bool((out.get("status") or {}).get("allowed"))


# -- csrsigning ----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CSRSigningOptions:
    cluster_signing_cert_file: str = ""
    cluster_signing_key_file: str = ""
    cluster_signing_duration: float = DEFAULT_SIGNING_DURATION


def load_signer(cert_file: str, key_file: str) -> tuple[x509.Certificate, pki.PrivateKey]:
    """The CA of --cluster-signing-cert-file/--cluster-signing-key-file; OSError or
    ValueError (with the file named) when they cannot be used."""
    with open(cert_file, "rb") as f:
        try:
            cert = pki.load_cert(f.read())
        except ValueError as e:
            raise ValueError(f"{cert_file}: not a PEM certificate ({e})") from None
    with open(key_file, "rb") as f:
        try:
            key = pki.load_key(f.read())
        except ValueError as e:
            raise ValueError(f"{key_file}: not a PEM private key ({e})") from None
    if not pki.key_matches(cert, key):
        raise ValueError(f"{key_file} is not the key of {cert_file}")
    return cert, key


class CSRSigningController(Controller):
    name = "csrsigning"
    Options = CSRSigningOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: CSRSigningOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.options = options or CSRSigningOptions()
        self.ca: tuple[x509.Certificate, pki.PrivateKey] | None = None
        if self.options.cluster_signing_cert_file and self.options.cluster_signing_key_file:
            self.ca = load_signer(self.options.cluster_signing_cert_file,
                                  self.options.cluster_signing_key_file)
            self.csrs = self.watch(factory.informer("certificatesigningrequests"))

    async def run(self, workers: int = 1) -> None:
        if self.ca is None:
            log.info("Skipping CSR signer controller because no csr cert/key was specified")
            return
        await super().run(workers)

    def duration(self, expiration_seconds: Any) -> float:
        """The certificate's lifetime: the requested one when shorter than the flag's,
        never under ten minutes."""
        ttl = self.options.cluster_signing_duration
        if isinstance(expiration_seconds, int) and not isinstance(expiration_seconds, bool):
            ttl = min(ttl, max(float(expiration_seconds), _MIN_DURATION))
        return ttl

    async def reconcile(self, key) -> None:
        csr = self.csrs.store.get(key)
        if csr is None or self.ca is None or (csr.get("status") or {}).get("certificate"):
            return
        if not has_condition(csr, "Approved") or has_condition(csr, "Failed"):
            return
        spec = csr.get("spec") or {}
        signer = spec.get("signerName")
        if signer not in (CLIENT_SIGNER, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, LEGACY_UNKNOWN_SIGNER):
            return
        req = parse_request(csr)
        usages = _usages(csr)
        problem = {KUBELET_CLIENT_SIGNER: lambda: kubelet_client_problem(req, set(usages)),
                   KUBELET_SERVING_SIGNER: lambda: kubelet_serving_problem(req, set(usages)),
                   CLIENT_SIGNER: lambda: api_client_problem(usages),
                   LEGACY_UNKNOWN_SIGNER: lambda: None}[signer]()
        status = dict(csr.get("status") or {})
        if problem is None:
            ca_cert, ca_key = self.ca
            now = datetime.datetime.fromtimestamp(self.clock.now(), datetime.timezone.utc)
            try:
                cert = pki.sign_request(req, usages, ca_cert=ca_cert, ca_key=ca_key, now=now,
                                        ttl=datetime.timedelta(seconds=self.duration(spec.get("expirationSeconds"))))
            except ValueError as e:
                raise RuntimeError(f"error auto signing csr: {e}") from None
            status["certificate"] = base64.b64encode(pki.cert_pem(cert)).decode()
            log.info("%s: issued %s (serial %x, until %s)", self.name, key, cert.serial_number,
                     cert.not_valid_after_utc.isoformat())
        else:
            status["conditions"] = [*conditions(csr), {
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                "message": problem, "lastUpdateTime": times.rfc3339(self.clock.now())}]
            log.info("%s: %s fails %s's checks: %s", self.name, key, signer, problem)
        try:
            await self.client.update_status(dict(csr, status=status))
        except errors.NotFound:
            pass  # deleted meanwhile


# -- csrcleaner ------------------------------------------------------------------------------

APPROVED_EXPIRATION = 3600.0
DENIED_EXPIRATION = 3600.0
PENDING_EXPIRATION = 24 * 3600.0


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return times.parse(value)
    except ValueError:
        return None


def cleanup_deadline(csr: dict) -> float | None:
    """When (epoch seconds) the cleaner may delete `csr`; None: never, as it stands."""
    deadlines: list[float] = []
    issued = (csr.get("status") or {}).get("certificate")
    for c in conditions(csr):
        updated = _time(c.get("lastUpdateTime"))
        kind = c.get("type")
        if kind == "Approved" and issued:
            if updated is not None:
                deadlines.append(updated + APPROVED_EXPIRATION)
            if (end := _not_after(issued)) is not None:
                deadlines.append(end)
        elif kind in ("Denied", "Failed") and updated is not None:
            deadlines.append(updated + DENIED_EXPIRATION)
    if not conditions(csr):
        created = _time((csr.get("metadata") or {}).get("creationTimestamp"))
        if created is not None:
            deadlines.append(created + PENDING_EXPIRATION)
    return min(deadlines) if deadlines else None


def _not_after(certificate: str) -> float | None:
    try:
        cert = pki.load_cert(base64.b64decode(certificate))
    except (ValueError, binascii.Error):
        return None
    return cert.not_valid_after_utc.timestamp()


class CSRCleanerController(Controller):
    name = "csrcleaner"

    def __init__(self, client, factory, *, recorder=None, clock=None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.csrs = self.watch(factory.informer("certificatesigningrequests"))

    async def reconcile(self, key) -> None:
        csr = self.csrs.store.get(key)
        if csr is None:
            return
        deadline = cleanup_deadline(csr)
        if deadline is None:
            return
        wait = deadline - self.clock.now()
        if wait > 0:
            self.queue.add_after(key, wait)
            return
        log.info("%s: deleting %s (past its deadline)", self.name, key)
        try:
            await self.client.delete("certificatesigningrequests", key,
                                     preconditions={"uid": csr["metadata"]["uid"]})
        except errors.NotFound:
            pass
