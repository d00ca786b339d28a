"""The kubelet. Keep this file free of imports: kubelet/shim.py runs in a bare
interpreter (python -I -S) and imports this package on every container start."""
