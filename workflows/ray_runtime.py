"""Start a local Ray, or join the cluster that `ray job submit` (or RAY_ADDRESS) points at."""

from __future__ import annotations

import json
import os

import ray

from workflows.recipe import RayConfig

# Ray Data's usage collection polls Prometheus (RAY_PROMETHEUS_HOST, default localhost:9090) from a thread
# of the driver every 10 s; without a Prometheus every poll fails and logs a traceback, pages of them by the
# end of a run. RAY_DATA_USAGE_DISABLED=1 is Ray Data's own switch for that collection.
PROMETHEUS_HOST = "RAY_PROMETHEUS_HOST"
DATA_USAGE_SWITCH = "RAY_DATA_USAGE_DISABLED"
PREEMPTION_WATCHER_SWITCH = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def quiet_data_usage_without_prometheus() -> None:
    """Switch Ray Data's usage collection off unless a Prometheus is configured or the user chose."""
    if not os.environ.get(PROMETHEUS_HOST):
        os.environ.setdefault(DATA_USAGE_SWITCH, "1")


def ensure_ray(config: RayConfig) -> str:
    """Connect once per process; returns a line saying what was done, for the log."""
    quiet_data_usage_without_prometheus()
    if ray.is_initialized():
        return "using the Ray instance this process already started"
    address = os.environ.get("RAY_ADDRESS")
    if address:
        # Under `ray job submit` the job's driver gets RAY_ADDRESS; the cluster's resources apply.
        ray.init(address=address, log_to_driver=True)
        return f"joined Ray cluster at {address}"
    # "local" and not None: without it ray.init() quietly joins whatever `ray start` last left running on
    # this machine, and then refuses num_cpus. A cluster is joined only when RAY_ADDRESS names it.
    # The dashboard also serves Ray's state API, which Ray Train's placement-group cleaner polls every
    # second: without it each poll logs "Failed to query Ray Train Controller actor state".
    # Ray Train's preemption watcher polls for node drains, which a single local machine never has; it is one
    # more actor process per training run (3-4 s of each run's start on 2 cores). Nodes inherit this
    # process's environment, so it must be set before ray.init; a user's own setting wins.
    os.environ.setdefault(PREEMPTION_WATCHER_SWITCH, "0")
    kwargs = {"address": "local", "num_cpus": config.num_cpus, "include_dashboard": True}
    if config.object_store_mib:
        kwargs["object_store_memory"] = config.object_store_mib * 1024 * 1024
    ray.init(**kwargs)
    return f"started a local Ray with {config.num_cpus} logical CPUs"


def ray_job_submission_id() -> str:
    """The `ray job submit` id this driver runs under ("" outside a submitted job), for the MLflow tags.

    Ray hands a submitted driver its job config, metadata included, as JSON in this variable."""
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "") or "{}")
    except json.JSONDecodeError:
        return ""
    return str(config.get("metadata", {}).get("job_submission_id", ""))
