"""The per-node service proxy (kube-proxy's job, in its nftables mode): `minik8s proxy`.

main.py is the command, proxier.py the component (informers, change tracking, batched
syncs), rules.py the pure rule compiler (Services + endpoints -> nft JSON), nft.py the
`nft -j` interface, model.py what is read from Services and EndpointSlices,
conntrack.py the stale UDP flow clean-up, healthcheck.py the healthCheckNodePort
servers, metrics.py kube-proxy's metrics.
"""
