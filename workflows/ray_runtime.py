"""Start a local Ray, or join the cluster that `ray job submit` (or RAY_ADDRESS) points at."""

from __future__ import annotations

import os

import ray

from workflows.recipe import RayConfig


def ensure_ray(config: RayConfig) -> str:
    """Connect once per process; returns a line saying what was done, for the log."""
    if ray.is_initialized():
        return "using the Ray instance this process already started"
    address = os.environ.get("RAY_ADDRESS")
    if address:
        # Under `ray job submit` the job's driver gets RAY_ADDRESS; the cluster's resources apply.
        ray.init(address=address, log_to_driver=True)
        return f"joined Ray cluster at {address}"
    kwargs = {"num_cpus": config.num_cpus, "include_dashboard": False}
    if config.object_store_mib:
        kwargs["object_store_memory"] = config.object_store_mib * 1024 * 1024
    ray.init(**kwargs)
    return f"started a local Ray with {config.num_cpus} logical CPUs"
