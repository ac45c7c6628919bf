"""Where a submitted Ray job's work ran, for the tests and the cluster benchmark that check it spread."""

from __future__ import annotations


def job_placement(dashboard_url: str, submission_id: str) -> dict[str, list[str]]:
    """Which nodes a submitted job's work ran on, from Ray's state API: task or actor name -> node ids."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors, list_tasks

    job_id = JobSubmissionClient(dashboard_url).get_job_info(submission_id).job_id
    where: dict[str, set[str]] = {}
    query = {"address": dashboard_url, "filters": [("job_id", "=", job_id)], "limit": 10_000, "detail": True}
    for task in list_tasks(**query, raise_on_missing_output=False):
        if task.node_id:
            where.setdefault(f"task:{task.func_or_class_name}", set()).add(task.node_id)
    for actor in list_actors(**query, raise_on_missing_output=False):
        if actor.node_id:
            where.setdefault(f"actor:{actor.class_name}", set()).add(actor.node_id)
    return {name: sorted(nodes) for name, nodes in sorted(where.items())}
