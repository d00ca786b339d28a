"""kubectl-lite: the `kubectl` verbs people use every day, against minik8s (or any
Kubernetes API server), built on `client/`.

`cli` parses the command line and imports only the module of the verb it runs, so a
command pays only for what it uses (`version --client` imports no HTTP, YAML or schema
code). Each verb module has `add_arguments(parser)` and `run(args, session) -> int`.
"""
__version__ = "v0.1.0"
