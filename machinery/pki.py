"""Keys and X.509 certificates, made and checked with `cryptography`.

Pure functions over values: no files, no clock of their own (every function that needs
the time takes `now`), nothing shared, so any thread may call them. The shapes follow
kubeadm's `pkiutil`:

- a CA is self-signed, `CA:TRUE`, may sign certificates (keyCertSign) and names itself in
  a DNS SAN, as kubeadm's CAs do;
- a leaf carries `CA:FALSE`, digitalSignature (+ keyEncipherment for RSA keys), the
  extended key usages asked for (server and/or client auth), its SANs, and the CA's key
  identifier; it is back-dated by five minutes (kubeadm's CertificateBackdate) so that a
  peer whose clock is slightly behind accepts it, and never outlives its CA;
- keys are RSA-2048 by default (kubeadm's encryptionAlgorithm default); RSA-3072,
  RSA-4096 and ECDSA-P256 are the other choices kubeadm offers. Private keys are written
  as kubeadm writes them: PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY` PEM.

`problems(cert, spec, ...)` says, in words, why a certificate does not do what a spec
asks (wrong subject, a missing SAN, expiring); an empty list means it does.
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]

KEY_ALGORITHMS = ("RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256")
DEFAULT_KEY_ALGORITHM = "RSA-2048"
CA_VALIDITY = datetime.timedelta(days=3650)     # kubeadm: 10 years
LEAF_VALIDITY = datetime.timedelta(days=365)    # kubeadm: 1 year
BACKDATE = datetime.timedelta(minutes=5)        # kubeadm's CertificateBackdate

SERVER = "server"
CLIENT = "client"
_USAGE_OIDS = {SERVER: ExtendedKeyUsageOID.SERVER_AUTH, CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class CertSpec:
    """What a leaf certificate must say: subject, SANs and extended key usages."""
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    usages: tuple[str, ...] = (CLIENT,)     # SERVER and/or CLIENT


def new_key(algorithm: str = DEFAULT_KEY_ALGORITHM) -> PrivateKey:
    if algorithm == "ECDSA-P256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm in ("RSA-2048", "RSA-3072", "RSA-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    raise ValueError(f"unknown key algorithm {algorithm!r} (one of {', '.join(KEY_ALGORITHMS)})")


def new_ca(common_name: str, key: PrivateKey, *, now: datetime.datetime,
           validity: datetime.timedelta = CA_VALIDITY) -> x509.Certificate:
    """A self-signed CA certificate for `key`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name)
               .public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(now + validity)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(_key_usage(key, ca=True), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False))
    return builder.sign(key, hashes.SHA256())


def sign(spec: CertSpec, public: PublicKey, *, ca_cert: x509.Certificate, ca_key: PrivateKey,
         now: datetime.datetime, validity: datetime.timedelta = LEAF_VALIDITY) -> x509.Certificate:
    """A leaf certificate for `public`, as `spec` says, signed by the CA."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    # A leaf never outlives its CA: a client would refuse it past the CA's end anyway.
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
               .public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(public, ca=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([_USAGE_OIDS[u] for u in spec.usages]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(key: PrivateKey | PublicKey, *, ca: bool) -> x509.KeyUsage:
    # keyEncipherment only means something for RSA key transport; kubeadm sets it for RSA only.
    rsa_key = isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey))
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                         crl_sign=False, encipher_only=False, decipher_only=False)


# -- reading a certificate back --------------------------------------------------------------

def spec_of(cert: x509.Certificate) -> CertSpec:
    """The spec a certificate was made from: what a renewal keeps (kubeadm's certToConfig)."""
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = tuple(u for u, oid in _USAGE_OIDS.items() if oid in eku)
    except x509.ExtensionNotFound:
        usages = ()
    return CertSpec(common_name=cn[0] if cn else "", organizations=orgs, dns_names=dns, ips=ips,
                    usages=usages)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `cert` (issuer name and signature both match)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _public_der(cert.public_key()) == _public_der(key.public_key())


def _public_der(public: object) -> bytes:
    if not isinstance(public, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return b""
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def problems(cert: x509.Certificate, spec: CertSpec, *, now: datetime.datetime,
             renew_before: datetime.timedelta = datetime.timedelta(0)) -> list[str]:
    """Why `cert` does not serve `spec` at `now`; empty when it does.

    The subject must be the spec's; the SANs and usages must include the spec's (a
    certificate with more names than asked still serves); it must be valid now and
    stay valid for at least `renew_before`.
    """
    have = spec_of(cert)
    out: list[str] = []
    if have.common_name != spec.common_name:
        out.append(f"its subject CN is {have.common_name!r}, not {spec.common_name!r}")
    if sorted(have.organizations) != sorted(spec.organizations):
        out.append(f"its subject O is {list(have.organizations)}, not {list(spec.organizations)}")
    missing = [n for n in spec.dns_names if n not in have.dns_names]
    have_ips = {ipaddress.ip_address(ip) for ip in have.ips}
    missing += [ip for ip in spec.ips if ipaddress.ip_address(ip) not in have_ips]
    if missing:
        out.append(f"its SANs lack {', '.join(missing)}")
    lacking = [u for u in spec.usages if u not in have.usages]
    if lacking:
        out.append(f"it is not for {' or '.join(lacking)} auth")
    if cert.not_valid_before_utc > now:
        out.append(f"it is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_after_utc <= now:
        out.append(f"it expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif cert.not_valid_after_utc - now < renew_before:
        out.append(f"it expires at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, within the renewal window")
    return out


# -- PEM ----------------------------------------------------------------------------------------

def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def public_key_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_cert(data: bytes) -> x509.Certificate:
    """The first certificate in PEM `data`; ValueError if there is none."""
    return x509.load_pem_x509_certificate(data)


def load_key(data: bytes) -> PrivateKey:
    """A PEM private key (RSA or EC, unencrypted); ValueError otherwise."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


# -- certificate signing requests (PKCS#10), as the kubelet's TLS bootstrap and the CSR signer use them --

# Kubernetes' certificates/v1 KeyUsage strings -> X.509 key usages and extended key
# usages (the CSR signer's keyUsageDict and extKeyUsageDict).
KEY_USAGES = {"signing": "digital_signature", "digital signature": "digital_signature",
              "content commitment": "content_commitment", "key encipherment": "key_encipherment",
              "key agreement": "key_agreement", "data encipherment": "data_encipherment",
              "cert sign": "key_cert_sign", "crl sign": "crl_sign",
              "encipher only": "encipher_only", "decipher only": "decipher_only"}
EXT_KEY_USAGES = {"any": "2.5.29.37.0", "server auth": "1.3.6.1.5.5.7.3.1",
                  "client auth": "1.3.6.1.5.5.7.3.2", "code signing": "1.3.6.1.5.5.7.3.3",
                  "email protection": "1.3.6.1.5.5.7.3.4", "s/mime": "1.3.6.1.5.5.7.3.4",
                  "ipsec end system": "1.3.6.1.5.5.7.3.5", "ipsec tunnel": "1.3.6.1.5.5.7.3.6",
                  "ipsec user": "1.3.6.1.5.5.7.3.7", "timestamping": "1.3.6.1.5.5.7.3.8",
                  "ocsp signing": "1.3.6.1.5.5.7.3.9", "microsoft sgc": "1.3.6.1.4.1.311.10.3.3",
                  "netscape sgc": "2.16.840.1.113730.4.1"}
# The CSR signer's PermissiveSigningPolicy: certificates are back-dated by five minutes;
# one that lives at least `SHORT` ends five minutes early too (so its whole life is the
# TTL), a shorter one ends a full TTL after now.
SIGNER_BACKDATE = datetime.timedelta(minutes=5)
SIGNER_SHORT = datetime.timedelta(hours=8)


def new_csr(key: PrivateKey, *, common_name: str, organizations: tuple[str, ...] = (),
            dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> bytes:
    """A PEM `CERTIFICATE REQUEST` for `key` with this subject and SANs, signed by `key`."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """The PKCS#10 request of PEM `data` whose signature verifies (Kubernetes' ParseCSR
    and CheckSignature); ValueError, worded as Kubernetes words it, otherwise."""
    start = data.find(b"-----BEGIN ")  # the first PEM block, as Go's pem.Decode finds it
    if start < 0 or not data.startswith(b"-----BEGIN CERTIFICATE REQUEST-----", start):
        raise ValueError("PEM block type must be CERTIFICATE REQUEST")
    try:
        csr = x509.load_pem_x509_csr(data[start:])
    except ValueError as e:
        raise ValueError(f"x509: malformed certificate request ({e})") from None
    try:
        valid = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - an algorithm cryptography cannot check
        valid = False
    if not valid:
        raise ValueError("x509: signature of the certificate request does not verify")
    return csr


def csr_subject(csr: x509.CertificateSigningRequest) -> tuple[str, tuple[str, ...]]:
    """(common name, organizations) of a request's subject."""
    cn = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return (cn[0] if cn else ""), orgs


def csr_sans(csr: x509.CertificateSigningRequest) -> dict[str, list[str]]:
    """A request's subject alternative names by type: dns, ip, email, uri."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return {"dns": [], "ip": [], "email": [], "uri": []}
    return {"dns": list(san.get_values_for_type(x509.DNSName)),
            "ip": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
            "email": list(san.get_values_for_type(x509.RFC822Name)),
            "uri": list(san.get_values_for_type(x509.UniformResourceIdentifier))}


def sign_request(csr: x509.CertificateSigningRequest, usages: list[str], *,
                 ca_cert: x509.Certificate, ca_key: PrivateKey, now: datetime.datetime,
                 ttl: datetime.timedelta) -> x509.Certificate:
    """The certificate the CSR signer issues for `csr` (Kubernetes' CertificateAuthority.Sign
    with its PermissiveSigningPolicy): the request's subject and SANs, the key usages and
    extended key usages `usages` name (Kubernetes' strings), CA:FALSE, no other
    extension of the request, valid from five minutes ago for `ttl` (see SIGNER_SHORT),
    never past the CA's own end. ValueError for an unknown usage or an expired CA."""
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    ext: list[x509.ObjectIdentifier] = []
    for u in usages:
        if u in KEY_USAGES:
            flags[KEY_USAGES[u]] = True
        elif u in EXT_KEY_USAGES:
            oid = x509.ObjectIdentifier(EXT_KEY_USAGES[u])
            if oid not in ext:
                ext.append(oid)
        else:
            raise ValueError(f"unrecognized usage: {u}")
    not_before = now - SIGNER_BACKDATE
    not_after = now + ttl if ttl < SIGNER_SHORT else now + ttl - SIGNER_BACKDATE
    ca_end = ca_cert.not_valid_after_utc
    if not now < ca_end:
        raise ValueError(f"refusing to sign a certificate that expired in the past: NotAfter={ca_end}")
    not_after = min(not_after, ca_end)
    builder = (x509.CertificateBuilder()
               .subject_name(csr.subject).issuer_name(ca_cert.subject)
               .public_key(csr.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if any(flags.values()):
        if (flags["encipher_only"] or flags["decipher_only"]) and not flags["key_agreement"]:
            raise ValueError("usages encipher only and decipher only need key agreement")
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if ext:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ext), critical=False)
    sans = csr_sans(csr)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in sans["dns"]]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sans["ip"]]
    names += [x509.RFC822Name(e) for e in sans["email"]]
    names += [x509.UniformResourceIdentifier(u) for u in sans["uri"]]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())
