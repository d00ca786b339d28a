"""The Linux container runtime: `kubelet.runtime.linux.runtime.LinuxRuntime`.

Real processes in Linux namespaces and cgroups: the sandbox and container helpers
(shim.py, run by path as their own interpreter or forked by its fork server), the
kernel calls Python lacks (kernel.py), the pod network (network.py over netlink.py),
cgroups (cgroups.py), volumes (volumes.py). Container roots come from the image
service (kubelet/images/). Empty on purpose: the shim imports modules of this package
by file, and `cluster/` imports cgroups.py alone, without the rest of the runtime.
"""
