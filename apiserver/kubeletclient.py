"""How the API server dials kubelets for pods/log and pods/exec (kube-apiserver's
--kubelet-client-certificate, --kubelet-client-key, --kubelet-certificate-authority).

`tls_context(cert, key, ca)` is the client side of the kubelet's HTTPS endpoint: the API
server presents its kubelet-client certificate (kubeadm's apiserver-kubelet-client,
O=system:masters); with a CA the kubelet's serving certificate is verified against it
and must name the address dialed (the Node's InternalIP), without one it is not
verified, as kube-apiserver without --kubelet-certificate-authority. A file that cannot
be read is a `ValueError` with a one-line message, for the command line to print.
"""
from __future__ import annotations

import ssl


def tls_context(cert_file: str, key_file: str, ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"--kubelet-client-certificate/--kubelet-client-key: {cert_file}, {key_file}: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    if ca_file:
        try:
            ctx.load_verify_locations(ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"--kubelet-certificate-authority: {ca_file}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
