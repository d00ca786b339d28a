"""`minik8s join --control-plane`: another control-plane host, as `kubeadm join
--control-plane` adds one; and the etcd leave of `minik8s reset` on such a host.

    minik8s join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H
                 --control-plane --certificate-key K
                 [--apiserver-advertise-address IP] [--apiserver-bind-port 6443] [--node-name N]

Phases, in kubeadm's order:
- preflight: every argument, root, the host neither initialised nor joined, the ports
  of the API server, etcd, the kubelet, the scheduler and the controller manager free,
  the advertise address one of this host's (default: the address this host reaches the
  join address from).
- discovery (cluster/discovery.py), then with the bootstrap token: kubeadm-config, the
  node name not taken by a Ready Node, and the shared certificates downloaded from
  kube-system/kubeadm-certs and decrypted (cluster/uploadcerts.py). A wrong key, an
  expired upload, anything wrong so far: one line, and nothing on the host changed.
- control-plane-prepare: the shared CAs and service-account keys written, this host's
  own leaf certificates made under them (cluster/pki.py through cluster/lab.py: the API
  server's names this host's address, the control-plane endpoint and 127.0.0.1; etcd's
  server and peer certificates this host's address), its kubeconfigs and config.yaml.
- etcd: this host added to etcd as a learner through etcd's membership API
  (cluster/etcdmembers.py; the existing members are found at the addresses of the
  `default/kubernetes` Endpoints, every live API server, each with its stacked etcd),
  etcd started with --initial-cluster-state existing, and the learner promoted once it
  has caught up.
- control-plane and kubelet-start: the API server, the controller manager and the
  scheduler (both leader-elected), the kubelet (with the control-plane taint), the
  service proxy and the pod network, as units (cluster/units.py); then the API server's
  /readyz, the other two's /healthz, the Node Ready, and mark-control-plane.

A failure after the member was added rolls back: the member is removed while its etcd
still runs (a learner never counts for quorum; a promoted member is removed before it is
stopped, so a cluster of two keeps its quorum for the removal), then the units are
removed, the Node its kubelet registered (if there was none before) is deleted, and every
file and directory the join made is deleted: the host is as it was and etcd has the
members it had. A unit that keeps exiting fails the join at once (cluster/lab.py's
wait), its log's last lines on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from client.kubeconfig import load as load_kubeconfig
from client.rest import Client
from cluster import discovery, etcdmembers, join, lab, layout as layouts, units, uploadcerts
from cluster.discovery import DiscoveryError
from cluster.join import JoinError

START_TIMEOUT = lab.START_TIMEOUT


def _join_error(e: Exception, say=None) -> JoinError:
    """Another module's "cause; fix" error as join's one line. init's advice to reset does
    not apply (join rolls itself back), and a unit's log tail goes to `say`, not stderr."""
    first, _, tail = str(e).partition("; its log ends:\n")
    if tail and say is not None:
        say("[control-plane] the end of its log:\n" + tail)
    cause, _, fix = first.splitlines()[0].partition("; ")
    fix = fix.replace(", then `minik8s reset` to start over", ", fix the cause, then join again")
    return JoinError(cause, fix or "fix that, then join again")


def _check_key(key: str) -> None:
    if not key:
        raise JoinError("--control-plane needs --certificate-key",
                        "give the key `minik8s init --upload-certs` (or `init phase upload-certs "
                        "--upload-certs`) printed")
    if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
        raise JoinError("--certificate-key is not 64 hex digits (an AES-256 key)",
                        "give the key `minik8s init phase upload-certs --upload-certs` printed")


def main(args: argparse.Namespace, *, out=sys.stdout) -> int:
    """`minik8s join ... --control-plane`: 0, or 1 after one line on stderr."""
    try:
        return run(args, out=out)
    except (JoinError, DiscoveryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, *, out=sys.stdout) -> int:
    _check_key(args.certificate_key)
    req = join.request_of(args)
    if not 0 < args.apiserver_bind_port < 65536:
        raise JoinError(f"--apiserver-bind-port {args.apiserver_bind_port} is not a port", "give 1-65535 (6443)")
    address = args.apiserver_advertise_address or req.advertise_address
    if address:
        try:
            import ipaddress
            ipaddress.ip_address(address)
        except ValueError:
            raise JoinError(f"--apiserver-advertise-address {address!r} is not an IP address",
                            "give this host's address, e.g. 192.168.1.11") from None
    else:
        address = join.source_address(req.endpoint)
    req.advertise_address = address
    try:
        return asyncio.run(join_control_plane(req, layouts.current(), key=args.certificate_key,
                                              bind_port=args.apiserver_bind_port, out=out))
    except lab.LabError as e:   # rolled back already
        raise _join_error(e) from None


def preflight(req: join.Request, lay: layouts.Layout, bind_port: int) -> None:
    join.preflight(req, lay)   # root, not initialised, kubelet port, the address is ours
    busy = lab.preflight_ports([bind_port, layouts.ETCD_CLIENT_PORT, layouts.ETCD_PEER_PORT,
                                layouts.CONTROLLER_MANAGER_PORT, layouts.SCHEDULER_PORT])
    if busy:
        raise JoinError(*busy[0])


async def _etcd_endpoints(admin_conf: str, server: str) -> list[str]:
    """Client URLs of the stacked etcd members: one at each live API server's address."""
    conn = load_kubeconfig(admin_conf).connection()
    import dataclasses
    conn = dataclasses.replace(conn, server=server)
    try:
        async with Client(conn, user_agent="minik8s-join", max_retries=2) as client:
            ep = await client.get("endpoints", "kubernetes", namespace="default")
    except Exception as e:  # noqa: BLE001 - API errors and httpx's transport errors alike
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise JoinError(f"cannot read the API servers' addresses (default/kubernetes): {cause}",
                        "check that the control plane runs") from None
    ips = [a["ip"] for sub in ep.get("subsets") or [] for a in sub.get("addresses") or []]
    return [f"https://{'[' + ip + ']' if ':' in ip else ip}:{layouts.ETCD_CLIENT_PORT}" for ip in dict.fromkeys(ips)]


async def _wait(lay: layouts.Layout, cfg: lab.HostConfig, timeout: float, say) -> None:
    """lab.wait_control_plane (which fails at once for a unit that keeps exiting)."""
    try:
        await asyncio.to_thread(lab.wait_control_plane, lay, cfg, timeout)
    except lab.LabError as e:
        raise _join_error(e, say) from None


def _node_exists(lay: layouts.Layout, name: str) -> bool:
    with lab.Api.from_kubeconfig(lay.admin_conf) as api:
        return api.get_or_none(f"/api/v1/nodes/{name}") is not None


def _delete_node(lay: layouts.Layout, name: str) -> None:
    with lab.Api.from_kubeconfig(lay.admin_conf) as api:
        try:
            api.delete(f"/api/v1/nodes/{name}")
        except lab.ApiError as e:
            if e.code != 404:
                raise


async def join_control_plane(req: join.Request, lay: layouts.Layout, *, key: str, bind_port: int,
                             out=sys.stdout) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    t0 = time.monotonic()
    say("[preflight] Running pre-flight checks")
    preflight(req, lay, bind_port)
    say(f"[discovery] Requesting cluster-info from https://{req.endpoint}")
    info = await discovery.discover(req.endpoint, req.discovery_token, req.ca_hashes, timeout=req.discovery_timeout)
    server = discovery.https_url(req.endpoint)
    async with Client(join.bootstrap_connection(server, info.ca_pem, req.tls_bootstrap_token),
                      user_agent="minik8s-join", max_retries=2) as client:
        say("[preflight] Reading configuration from the cluster...")
        config = await join.read_cluster_configuration(client)
        await join.check_node_name(client, req.node_name, warn=say)
        say('[download-certs] Downloading the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
        try:
            shared = await uploadcerts.fetch(client, key)
        except uploadcerts.CopyCertsError as e:
            raise _join_error(e) from None
    if shared["ca.crt"] != info.ca_pem:
        raise JoinError("the uploaded CA is not the cluster's (cluster-info's)",
                        "upload the certificates again on a control-plane host of this cluster")
    cfg = lab.HostConfig(nodeName=req.node_name, advertiseAddress=req.advertise_address, role="control-plane",
                         bindPort=bind_port, controlPlaneEndpoint=config.control_plane_endpoint or req.endpoint,
                         podSubnet=config.pod_subnet or lab.DEFAULT_POD_CIDR, serviceSubnet=config.service_subnet,
                         networkBackend=config.network_backend,
                         controllerManagerExtraArgs=dict(config.controller_manager_extra_args))
    undo = join.Undo(lay, keep_log=join.kept_kubelet_log(req.node_name) if not units.systemd_runs(lay) else "",
                     node_name=req.node_name)
    member: etcdmembers.Member | None = None
    node_existed: bool | None = None
    etcd_eps: list[str] = []
    tls = etcdmembers.TLS.from_pki(lay.pki)
    try:
        for d in (lay.pki, os.path.join(lay.pki, "etcd"), lay.etcd_data, lay.kubelet_pki):
            undo.makedirs(d, 0o700 if d == lay.etcd_data else 0o755)
        join._track_unit_dirs(undo)
        for path, data in shared.items():
            undo.write(os.path.join(lay.pki, path), data, 0o600 if path.endswith(".key") else 0o644)
        say(f'[certs] Using certificateDir folder "{lay.pki}"')
        for o in lab.make_pki(lay, cfg):
            if o.made:
                say(f'[certs] Generating "{o.name}" certificate and key')
        undo.files += [lay.admin_conf, lay.controller_manager_conf, lay.scheduler_conf, lay.config_yaml]
        for path in lab.write_control_plane_kubeconfigs(lay, cfg):
            say(f'[kubeconfig] Writing "{os.path.basename(path)}" kubeconfig file')
        lab.write_kubelet_conf(lay, cfg)
        cfg.save(lay)
        node_existed = await asyncio.to_thread(_node_exists, lay, cfg.nodeName)

        etcd_eps = await _etcd_endpoints(lay.admin_conf, server)
        peer = f"https://{req.advertise_address}:{layouts.ETCD_PEER_PORT}"
        say(f"[etcd] Adding this host to etcd ({', '.join(etcd_eps)}) as a learner, peer {peer}")
        try:
            member, members = await etcdmembers.add_member(etcd_eps, peer, tls, learner=True)
        except etcdmembers.EtcdMemberError as e:
            raise JoinError(f"cannot add this host to etcd: {e}", "check the etcd members (`minik8s reset` "
                            "on a host that left without it), then join again") from None
        initial = etcdmembers.initial_cluster(members, cfg.nodeName, peer)
        wanted = lab.control_plane_units(lay, cfg, initial_cluster=initial, etcd_state="existing") + \
            lab.node_units(lay, cfg)
        undo.units = [u.name for u in wanted]
        say("[control-plane] Creating units " + ", ".join(u.name for u in wanted))
        try:
            units.install(wanted, lay)
        except units.UnitError as e:
            raise JoinError(f"the units could not be started: {e}", "fix that, then join again") from None
        say("[etcd] Waiting for the new etcd member to catch up, then promoting it")
        try:
            await etcdmembers.promote_member(etcd_eps, member.id, tls, timeout=START_TIMEOUT)
        except etcdmembers.EtcdMemberError as e:
            raise JoinError(f"the new etcd member did not catch up: {e}",
                            f"see {lab.unit_log_hint(lay, 'etcd')}, then join again") from None
        say(f"[wait-control-plane] Waiting for etcd, the API server at {cfg.local_api}, the controller manager "
            f"and the scheduler (up to {START_TIMEOUT:.0f}s)")
        await _wait(lay, cfg, START_TIMEOUT, say)
        say(f"[kubelet-check] Waiting for node {cfg.nodeName} to be Ready")

        def ready_and_marked() -> None:
            with lab.Api.from_kubeconfig(lay.admin_conf, server=cfg.local_api) as api:
                lab.wait_node_ready(api, lay, cfg.nodeName)
                lab.mark_control_plane(api, cfg.nodeName)
        try:
            await asyncio.to_thread(ready_and_marked)
        except lab.LabError as e:
            raise _join_error(e, say) from None
        say(f"[mark-control-plane] Marked the node {cfg.nodeName} as control-plane")
    except BaseException:
        problems = []
        if member is not None:
            # Before the units stop: a promoted member of two needs both for the removal.
            try:
                await etcdmembers.remove_member(etcd_eps, member.id, tls)
                print(f"[rollback] removed etcd member {member.id:x}", file=sys.stderr)
            except etcdmembers.EtcdMemberError as e:
                problems.append(f"removing etcd member {member.id:x}: {e}")
        if undo.units:
            try:
                units.remove(undo.units, lay)
                undo.units = []
            except units.UnitError as e:
                problems.append(str(e))
        if node_existed is False:
            # The kubelet registered a Node that nothing will ever run: take it back too.
            try:
                await asyncio.to_thread(_delete_node, lay, cfg.nodeName)
            except lab.LabError as e:
                problems.append(f"deleting Node {cfg.nodeName}: {e}")
        problems += await asyncio.to_thread(undo.rollback)  # pyroute2 runs its own event loop
        for p in problems:
            print(f"warning: undoing the join: {p}", file=sys.stderr)
        raise
    say(f"""
This node has joined the cluster and a new control plane instance was created (in {time.monotonic() - t0:.1f}s):

* Certificate signing request was sent to apiserver and approval was received.
* The Kubelet was informed of the new secure connection details.
* Control plane label and taint were applied to the new node.
* The Kubernetes control plane instances scaled up.
* A new etcd member was added to the local/stacked etcd cluster.

To start administering your cluster from this node, you need to run the following as a regular user:

\tmkdir -p $HOME/.kube
\tsudo cp -i {lay.admin_conf} $HOME/.kube/config
\tsudo chown $(id -u):$(id -g) $HOME/.kube/config

Run 'kubectl get nodes' to see this node join the cluster.
""")
    return 0


# -- reset -------------------------------------------------------------------------------------------

def leave_etcd(lay: layouts.Layout) -> list[str]:
    """`minik8s reset` on a control-plane host: remove this host's etcd member while its
    etcd still runs (kubeadm reset's "remove-etcd-member"); what was done. The last
    member has nothing to leave; a host that is not a control plane neither."""
    cfg = lab.HostConfig.load(lay)
    if cfg is None or cfg.role != "control-plane" or not os.path.exists(os.path.join(lay.pki, "etcd", "ca.crt")):
        return []
    tls = etcdmembers.TLS.from_pki(lay.pki)
    if not os.path.exists(tls.cert_file):
        return []
    peer = f"https://{cfg.advertiseAddress}:{layouts.ETCD_PEER_PORT}"
    local = f"https://127.0.0.1:{layouts.ETCD_CLIENT_PORT}"

    async def leave() -> list[str]:
        members = await etcdmembers.list_members([local], tls)
        others = [u for m in members if peer not in m.peer_urls for u in m.client_urls]
        if not others:
            return []
        gone = await etcdmembers.remove_member_by_peer_url([local, *others], peer, tls)
        return [f"removed etcd member {gone.name or gone.id} ({peer})"] if gone else []
    try:
        return asyncio.run(leave())
    except etcdmembers.EtcdMemberError as e:
        raise RuntimeError(f"could not leave the etcd cluster: {e}") from None
