"""Scale-out: the suite's demo job ran on a two-node cluster (`ray start --head` + `ray start --address`),
with its artifact root on an S3-compatible object store and MLflow as a tracking server (conftest's
demo_job). These tests check where the work ran, what landed in the store, and what the server holds."""

from __future__ import annotations

import json
import re

from mlflow.tracking import MlflowClient

from testbed.demo_run import DEMO_STAGES
from tests.conftest import DEMO_PREFIX, DEMO_SUBMISSION_ID

SHARDED_OUTPUTS = {"recaption": "captions/{}.parquet", "embed": "sidecars/{}.parquet"}


def _node_ids(ray_cluster) -> set[str]:
    return {n["node_id"] for n in ray_cluster.nodes() if n["state"] == "ALIVE"}


def test_the_jobs_work_ran_on_both_nodes(demo_job, ray_cluster):
    nodes = _node_ids(ray_cluster)
    assert len(nodes) == 2
    placement = {name: set(ids) for name, ids in demo_job.placement.items()}
    shown = json.dumps(demo_job.placement, indent=1)
    # Ray Train: finetune_text and train_vision with placement_strategy SPREAD, one worker per node.
    assert placement["actor:RayTrainWorker"] == nodes, shown
    # img2dataset's ray distributor: its per-shard download tasks ran in the job.
    assert any("ray_download" in name for name in placement), shown
    # Ray Data (recaption's vLLM engine and its row tasks, embed's encoder actor and its tasks): its tasks
    # are scheduled SPREAD, so they ran on both nodes.
    data_work = [n for n in placement if n == "task:_map_task" or n.startswith("actor:MapWorker(")]
    assert "actor:MapWorker(MapBatches(vLLMEngineStageUDF))" in data_work, shown
    assert set().union(*(placement[n] for n in data_work)) == nodes, shown


def test_every_artifact_is_on_the_object_store_with_its_manifest_written_last(demo_job, object_store):
    fs = object_store.filesystem()
    root = f"{object_store.bucket}/{DEMO_PREFIX}"
    # The plan and the summary table: every stage's artifact is an s3:// URI, none a local path.
    rows = [line.split() for line in demo_job.output.splitlines()]
    rows = [r for r in rows if len(r) >= 5 and r[0] in DEMO_STAGES and r[1] in ("run", "ran")]
    assert len(rows) == 2 * len(DEMO_STAGES), rows
    assert all(r[-1].startswith(f"s3://{root}/{r[0]}/") for r in rows), rows
    for stage in DEMO_STAGES:
        (manifest,) = fs.glob(f"{root}/{stage}/*/manifest.json")
        stage_dir = manifest.rsplit("/", 1)[0]
        written = {path: info["LastModified"] for path, info in fs.find(stage_dir, detail=True).items()}
        others = {p: t for p, t in written.items() if p != manifest}
        assert others, f"{stage}: only a manifest"
        # Object stores have no rename: the manifest, a single put, comes after every other object.
        assert written[manifest] >= max(others.values()), stage
        for shard_file in SHARDED_OUTPUTS.get(stage, "") and fs.glob(f"{stage_dir}/_shards/*.json"):
            shard = shard_file.rsplit("/", 1)[-1].removesuffix(".json")
            data = f"{stage_dir}/{SHARDED_OUTPUTS[stage].format(shard)}"
            assert written[shard_file] >= written[data], shard_file  # the marker after its shard's data
    download = json.loads(fs.cat(fs.glob(f"{root}/download/*/manifest.json")[0]))
    assert download["config"]["distributor"] == "ray"


def test_mlflow_server_holds_the_runs_and_the_store_holds_their_artifacts(demo_job, object_store):
    client = MlflowClient(demo_job.tracking_uri)
    experiment = client.get_experiment_by_name("llm2clip-demo")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("ray_job_submission_id") == DEMO_SUBMISSION_ID]
    stages = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(stages) == sorted(DEMO_STAGES)
    # Rank 0 of each Ray Train run logged its steps over HTTP from its node.
    assert len(client.get_metric_history(stages["finetune_text"].info.run_id, "train_loss")) == 60
    assert client.get_metric_history(stages["train_vision"].info.run_id, "train_loss")
    fs = object_store.filesystem()
    stored = fs.find(f"{object_store.bucket}/mlflow-artifacts/{experiment.experiment_id}")
    for stage, run in stages.items():
        path = f"{object_store.bucket}/mlflow-artifacts/{experiment.experiment_id}/{run.info.run_id}"
        assert f"{path}/artifacts/manifest.json" in stored, stage


def test_the_job_log_shows_each_stages_progress(demo_job):
    """What `ray job logs` shows while the job runs: rank 0's step lines of both trainers (with rate, ETA,
    checkpoints and held-out scores) and a line per finished shard of recaption and embed."""
    output = demo_job.output
    for stage, unit in (("finetune_text", "pairs"), ("train_vision", "images")):
        steps = re.findall(
            rf"\[{stage}\] step (\d+)/(\d+) \(\d+%\): loss [\d.]+, [\d,.]+ {unit}/s, "
            r"elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d",
            output,
        )
        assert steps, f"no progress line of {stage} in the job's log"
        assert steps[-1][0] == steps[-1][1], f"{stage}'s last line is not its last step: {steps[-1]}"
        assert f"[{stage}] step {steps[-1][1]}: checkpoint saved" in output
    assert re.search(r"\[train_vision\] step \d+: held-out \w+ [\d.]+", output)
    for stage, unit in (("recaption", "images"), ("embed", "captions")):
        shards = re.findall(rf"\[{stage}\] shard \S+ done: (\d+)/(\d+) shards, [\d,]+ {unit}", output)
        assert shards and shards[-1][0] == shards[-1][1], f"{stage}: {shards}"
