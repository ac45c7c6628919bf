"""The demo chain submitted as a Ray job to one node vs. two nodes, both on this machine, side by side.

    python -m bench.cluster_overhead [--repeats 1] [--json FILE]

Both layouts run exactly what the test suite's demo job runs: `ray job submit` of the small demo with its
artifacts on an S3 server (moto, loopback) and MLflow as a tracking server, img2dataset's ray distributor
and Ray Train workers spread. One node: `ray start --head --num-cpus=4`; two nodes: a head with 2 CPUs
and a second `ray start --address` node with 2. Same machine, same cores: a second node adds a raylet,
copies between the two nodes' object stores and gloo between processes of different nodes, and takes
nothing off the cores. The ratio is the overhead of running as a cluster, not a speed-up; the speed-up
needs a second machine.
"""

from __future__ import annotations

import argparse
import os
import re
import time

from bench.result import REPO, default_json, machine, write_result
from testbed.demo_run import DEMO_STAGES, ON_THE_CLUSTER, SMALL_DEMO
from testbed.job_placement import job_placement
from testbed.ray_cluster import LocalRayCluster
from testbed.services import MlflowTrackingServer, ObjectStoreServer

LAYOUTS = {"one node (4 CPUs)": ((4, None),), "two nodes (2 + 2 CPUs)": ((2, None), (2, {"node2": 1}))}


def start_cluster(layout: tuple) -> LocalRayCluster:
    (head_cpus, _), *workers = layout
    cluster = LocalRayCluster(num_cpus=head_cpus).start()
    for cpus, resources in workers:
        cluster.add_worker_node(num_cpus=cpus, resources=resources)
    return cluster


def stage_seconds(output: str) -> dict[str, float]:
    """Each stage's duration from the workflow's summary table."""
    found = {}
    for line in output.splitlines():
        cells = line.split()
        if (
            len(cells) >= 3
            and cells[0] in DEMO_STAGES
            and cells[1] == "ran"
            and re.match(r"^[\d.]+$", cells[2])
        ):
            found[cells[0]] = float(cells[2])
    return found


def run_layout(name: str, layout: tuple, store: ObjectStoreServer, mlflow_url: str, repeat: int) -> dict:
    cluster = start_cluster(layout)
    try:
        entrypoint = ["python", "workflows/full.py", "--config", "configs/demo.yaml"]
        entrypoint += ["--artifacts", store.uri(f"bench-{len(layout)}-nodes-{repeat}")]
        for assignment in (*SMALL_DEMO, *ON_THE_CLUSTER):
            entrypoint += ["--set", assignment]
        env_vars = {**store.env, "MLFLOW_TRACKING_URI": mlflow_url}
        submission_id = f"bench-{len(layout)}-{repeat}"
        began = time.perf_counter()
        finished = cluster.submit(entrypoint, REPO, submission_id, 1800, runtime_env={"env_vars": env_vars})
        wall = time.perf_counter() - began
        output = finished.stdout + finished.stderr
        if finished.returncode != 0:
            raise SystemExit(f"{name}: job failed\n{output[-6000:]}")
        node_of = {
            n["node_id"]: f"node{i + 1}" for i, n in enumerate(sorted(cluster.nodes(), key=_head_first))
        }
        placement = {
            what: sorted(node_of.get(n, n) for n in nodes)
            for what, nodes in job_placement(cluster.dashboard_url, submission_id).items()
        }
    finally:
        cluster.stop()
    return {
        "name": name,
        "nodes": len(layout),
        "repeat": repeat,
        "wall_s": round(wall, 2),
        "stages_s": stage_seconds(output),
        "placement": placement,  # what ran -> the nodes it ran on (node1 = head)
    }


def _head_first(node: dict) -> tuple[bool, str]:
    return ("node:__internal_head__" not in node["resources_total"], node["node_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per layout, alternating layouts")
    parser.add_argument("--json", default=default_json("cluster_overhead"))
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    store = ObjectStoreServer().start()
    mlflow = MlflowTrackingServer(store.uri("mlflow-artifacts"), store.env).start()
    runs = []
    try:
        for repeat in range(args.repeats):
            for name, layout in LAYOUTS.items():
                print(f"== {name}, run {repeat + 1} of {args.repeats}", flush=True)
                runs.append(run_layout(name, layout, store, mlflow.url, repeat))
    finally:
        mlflow.stop()
        store.stop()
    rows = []
    for name in LAYOUTS:
        walls = sorted(r["wall_s"] for r in runs if r["name"] == name)
        rows.append({"name": name, "wall_s": walls[len(walls) // 2]})  # the median run
    base = rows[0]["wall_s"]
    for row in rows:
        row["ratio"] = round(row["wall_s"] / base, 3)
    result = {
        "bench": "cluster_overhead",
        "rows": rows,
        "runs": runs,
        "note": "same machine for both: overhead of a second node, not speed-up",
        "machine": machine(),
    }
    write_result(args.json, result)
    print(f"small demo chain as a Ray job, artifacts on S3 (moto), MLflow server; {result['machine']}")
    print(f"{'layout':<26}{'wall_s':>10}{'ratio':>10}")
    for row in rows:
        print(f"{row['name']:<26}{row['wall_s']:>10.1f}{row['ratio']:>10.3f}")
    stages = sorted({s for r in runs for s in r["stages_s"]}, key=DEMO_STAGES.index)
    print(f"\n{'stage (s)':<16}" + "".join(f"{name.split(' (')[0]:>14}" for name in LAYOUTS))
    for stage in stages:
        cells = []
        for name in LAYOUTS:
            values = [r["stages_s"].get(stage) for r in runs if r["name"] == name and stage in r["stages_s"]]
            cells.append(f"{sorted(values)[len(values) // 2]:>14.1f}" if values else f"{'-':>14}")
        print(f"{stage:<16}" + "".join(cells))
    print("\nOne machine: the two-node row shows what a second node costs, not what it gains.")


if __name__ == "__main__":
    main()
