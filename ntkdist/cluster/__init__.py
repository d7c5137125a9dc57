"""Ray actors and pools binding kernels, store and linalg to workers and devices (the only room that knows Ray)."""

from .builder import BuildReport, GramBlockWorker, build_gram, plan_tasks, read_sketch, sketch_omega
from .operator import RayGramOperator
from .panel_worker import GramPanelWorker
from .runtime import ray_session, start_local_ray

__all__ = ["BuildReport", "GramBlockWorker", "GramPanelWorker", "RayGramOperator", "build_gram", "plan_tasks",
           "ray_session", "read_sketch", "sketch_omega", "start_local_ray"]
