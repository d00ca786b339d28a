"""One module per controller. `CONTROLLERS` maps the name used by `--controllers` to
"module:Class"; each class is a `controller_manager.controller.Controller` built as
`Class(client, factory, *, recorder=..., clock=..., **options)` and run with
`run(workers)`."""

CONTROLLERS = {
    "replicaset": "controller_manager.controllers.replicaset:ReplicaSetController",
    "deployment": "controller_manager.controllers.deployment:DeploymentController",
    "garbagecollector": "controller_manager.controllers.garbagecollector:GarbageCollector",
    "namespace": "controller_manager.controllers.namespace:NamespaceController",
    "serviceaccount": "controller_manager.controllers.serviceaccount:ServiceAccountController",
    "endpoints": "controller_manager.controllers.endpoints:EndpointsController",
    "podgc": "controller_manager.controllers.podgc:PodGCController",
    "nodelifecycle": "controller_manager.controllers.nodelifecycle:NodeLifecycleController",
    "nodeipam": "controller_manager.controllers.nodeipam:NodeIPAMController",
}
