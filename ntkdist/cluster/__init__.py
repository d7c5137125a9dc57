"""Ray actors and pools binding kernels, store and linalg to workers and devices (the only room that knows Ray)."""

from .builder import (BuildReport, GramBlockWorker, build_gram, plan_tasks, read_sketch, resources_per_worker,
                      sketch_omega, worker_resources)
from .operator import RayGramOperator
from .panel_worker import GramPanelWorker
from .progress import BuildProgress, PassProgress
from .runtime import cluster_resources, get, ray_session, start_local_ray
from .verify import BadBlock, VerifyReport, repair_store, verify_store

__all__ = ["BadBlock", "BuildProgress", "PassProgress", "BuildReport", "GramBlockWorker", "GramPanelWorker", "RayGramOperator",
           "VerifyReport", "build_gram", "cluster_resources", "get", "plan_tasks", "ray_session", "read_sketch",
           "repair_store", "resources_per_worker", "sketch_omega", "start_local_ray", "verify_store",
           "worker_resources"]
