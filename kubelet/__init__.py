"""The kubelet. Keep this file free of imports: it is imported by every `python -m
kubelet` start and by everything under it."""
