"""`minik8s certs check-expiration | renew all|NAME`: kubeadm's `certs` commands for the
cluster's PKI (<state>/pki, or --cert-dir).

check-expiration prints kubeadm's two tables and changes nothing. renew re-issues the
named certificate (or every one) under its existing CA, keeping its subject and SANs; an
unknown name, a missing directory or an unusable CA is a one-line error, exit 1, and
nothing is changed.
"""
from __future__ import annotations

import argparse
import os
import sys

from cluster import pki
from cluster.state import state_dir


def add_parsers(sub) -> None:
    p = sub.add_parser("certs", help="check and renew the cluster's certificates")
    csub = p.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    c = csub.add_parser("check-expiration", help="show when each certificate and CA expires")
    _common(c)
    r = csub.add_parser("renew", help="re-issue certificates under their CA (unconditionally, as kubeadm does)")
    r.add_argument("name", help="all, or a certificate's name as check-expiration lists it")
    _common(r)
    csub.add_parser("certificate-key", help="print a new key for `init phase upload-certs` "
                    "(32 random bytes, hex)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", help="the cluster's state dir (default ~/.minik8s)")
    p.add_argument("--cert-dir", help="where the certificates are (default <state dir>/pki)")


def run(args: argparse.Namespace) -> int:
    if args.certs_command == "certificate-key":
        from cluster.uploadcerts import certificate_key
        print(certificate_key())
        return 0
    directory = args.cert_dir or os.path.join(state_dir(args.state_dir), pki.PKI_DIR)
    try:
        if not os.path.isdir(directory):
            raise pki.PKIError(f"no certificates in {directory}")
        if args.certs_command == "check-expiration":
            sys.stdout.write(pki.format_expirations(directory))
            return 0
        for leaf, renewed in pki.renew(directory, [args.name]):
            print(f"{leaf.long_name} renewed" if renewed else f"MISSING! {leaf.long_name}")
    except pki.PKIError as e:
        print(f"minik8s: error: {e}", file=sys.stderr)
        return 1
    print("\nDone renewing certificates. You must restart the API server, controller manager, "
          "scheduler, kubelets and etcd, so that they can use the new certificates.")
    return 0
