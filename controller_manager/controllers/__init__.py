"""One module per controller, and the table `--controllers` names them from.

REGISTRY maps each controller's name to its class, in the order the manager starts
them, as the scheduler's plugin table maps names to constructors (machinery.registry).
Every class is a `controller_manager.controller.Controller`, built as
`Class(client, factory, *, recorder=..., clock=..., options=Class.Options(...))` and run
with `run(workers)`. A new controller is a new module here and one line in the table.
"""
from __future__ import annotations

from controller_manager.controller import ControllerClass
from controller_manager.controllers.bootstrapsigner import BootstrapSigner, TokenCleaner
from controller_manager.controllers.certificates import (CSRApprovingController, CSRCleanerController,
                                                        CSRSigningController)
from controller_manager.controllers.clusterroleaggregation import ClusterRoleAggregationController
from controller_manager.controllers.cronjob import CronJobController
from controller_manager.controllers.daemonset import DaemonSetController
from controller_manager.controllers.deployment import DeploymentController
from controller_manager.controllers.disruption import DisruptionController
from controller_manager.controllers.endpoints import EndpointsController
from controller_manager.controllers.endpointslice import EndpointSliceController
from controller_manager.controllers.garbagecollector import GarbageCollector
from controller_manager.controllers.horizontalpodautoscaler import HorizontalPodAutoscalerController
from controller_manager.controllers.job import JobController
from controller_manager.controllers.localpath import LocalPathProvisioner
from controller_manager.controllers.namespace import NamespaceController
from controller_manager.controllers.nodeipam import NodeIPAMController
from controller_manager.controllers.nodelifecycle import NodeLifecycleController
from controller_manager.controllers.persistentvolume import PersistentVolumeBinder
from controller_manager.controllers.podgc import PodGCController
from controller_manager.controllers.replicaset import ReplicaSetController
from controller_manager.controllers.replicationcontroller import ReplicationControllerController
from controller_manager.controllers.rootcacertpublisher import RootCACertPublisher
from controller_manager.controllers.serviceaccount import ServiceAccountController
from controller_manager.controllers.servicelb import ServiceLBController
from controller_manager.controllers.statefulset import StatefulSetController
from controller_manager.controllers.ttlafterfinished import TTLAfterFinishedController
from controller_manager.controllers.volumeprotection import PVCProtectionController, PVProtectionController
from machinery.registry import Registry

REGISTRY: Registry[ControllerClass] = Registry("controller", [
    (c.name, c) for c in (ReplicaSetController, DeploymentController, GarbageCollector,
                          NamespaceController, ServiceAccountController, EndpointsController,
                          EndpointSliceController,
                          PodGCController, NodeLifecycleController, NodeIPAMController,
                          ClusterRoleAggregationController, RootCACertPublisher,
                          ServiceLBController,
                          JobController, CronJobController, TTLAfterFinishedController,
                          BootstrapSigner, TokenCleaner, CSRApprovingController, CSRSigningController,
                          CSRCleanerController,
                          DisruptionController, StatefulSetController,
                          PersistentVolumeBinder, PVCProtectionController, PVProtectionController,
                          LocalPathProvisioner, DaemonSetController, ReplicationControllerController,
                          HorizontalPodAutoscalerController)
])
