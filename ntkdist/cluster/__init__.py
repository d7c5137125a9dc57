"""Ray actors and pools binding kernels, store and linalg to workers and devices (the only room that knows Ray)."""

from .builder import (BuildReport, GramBlockWorker, build_gram, plan_tasks, read_sketch, resources_per_worker,
                      sketch_omega, worker_resources)
from .operator import RayGramOperator
from .panel_worker import GramPanelWorker
from .progress import BuildProgress
from .runtime import cluster_resources, get, ray_session, start_local_ray

__all__ = ["BuildProgress", "BuildReport", "GramBlockWorker", "GramPanelWorker", "RayGramOperator", "build_gram",
           "cluster_resources", "get", "plan_tasks", "ray_session", "read_sketch", "resources_per_worker", "sketch_omega",
           "start_local_ray", "worker_resources"]
