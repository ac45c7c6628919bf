"""The benchmark suite (`make bench`): run every benchmark in bench/, each measuring its figures beside
their baselines in the same run, then print one table, write bench/results/suite.json, log the suite to
the MLflow experiment `llm2clip-bench-suite` and put the latest table in bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.result import REPO, machine
from bench.suite_table import SuiteRow, markdown_table, metric_name, text_table
from bench.summary import suite_rows

HERE = Path(__file__).resolve().parent

EXPERIMENT = "llm2clip-bench-suite"
# (result name, module of bench/, extra arguments); order is the table's order.
BENCHES = (
    ("demo_walltime", "demo_walltime", []),
    (
        "long_caption_walltime",
        "demo_walltime",
        [
            "--config",
            "configs/long_caption_experiment.yaml",
            "--name",
            "long_caption_walltime",
            "--target-s",
            "3600",
        ],
    ),
    ("download_throughput", "download_throughput", []),
    ("recaption_throughput", "recaption_throughput", []),
    ("finetune_throughput", "finetune_throughput", []),
    ("embed_throughput", "embed_throughput", []),
    ("vision_step_time", "vision_step_time", []),
    ("decode_throughput", "decode_throughput", []),
    ("scaling", "scaling", []),
    ("cluster_overhead", "cluster_overhead", []),
    ("gpu_throughput", "gpu_throughput", []),
    ("mntp_memory", "mntp_memory", []),
    ("data_scale", "scale", []),
)

# What bench/README.md says above the latest table.
README_INTRO = (HERE / "readme_intro.md").read_text()


def run_benches(selected: list[tuple[str, str, list[str]]], results_dir: Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for name, module, extra in selected:
        out = results_dir / f"{name}.json"
        out.unlink(missing_ok=True)
        print(f"== bench.{module}", flush=True)
        began = time.perf_counter()
        command = [sys.executable, "-m", f"bench.{module}", "--json", str(out), *extra]
        code = subprocess.run(command, check=False, cwd=REPO)
        elapsed = time.perf_counter() - began
        if code.returncode != 0 or not out.is_file():
            results[name] = {
                "bench": name,
                "error": f"bench.{module} exited {code.returncode} after {elapsed:.0f} s",
            }
        else:
            results[name] = {**json.loads(out.read_text()), "bench_s": round(elapsed, 1)}
    return results


def log_to_mlflow(
    rows: list[SuiteRow], suite: dict, tracking_uri: str, suite_file: Path, table_file: Path
) -> str:
    """One run per suite invocation: each row's ratio and figure as metrics, the table and JSON as files."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    run = client.create_run(
        experiment_id,
        run_name=f"suite {suite['date']}",
        tags={
            "machine": suite["machine"],
            "command": suite["command"],
            mlflow.utils.mlflow_tags.MLFLOW_SOURCE_NAME: "bench.run_all",
        },
    )
    metrics = {}
    for row in rows:
        if row.ratio is not None:
            metrics[f"{metric_name(row)}/ratio"] = row.ratio
        if row.figure is not None:
            metrics[f"{metric_name(row)}/figure"] = row.figure
    timestamp = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[mlflow.entities.Metric(k, float(v), timestamp, 0) for k, v in metrics.items()],
    )
    client.log_artifact(run.info.run_id, str(suite_file))
    client.log_artifact(run.info.run_id, str(table_file))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def bench_readme(rows: list[SuiteRow], suite: dict) -> str:
    return (
        README_INTRO
        + f"\n## Latest results\n\nCommand: `{suite['command']}`  \nMachine: {suite['machine']}  \n"
        + f"Date: {suite['date']} (suite wall time {suite['wall_s']:.0f} s)\n\n"
        + markdown_table(rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[b[0] for b in BENCHES], help="run these benches only")
    parser.add_argument("--results", default=str(HERE / "results"), help="folder for every bench's JSON")
    parser.add_argument("--readme", default=str(HERE / "README.md"), help="where the latest table goes")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))
    args = parser.parse_args(argv)
    results_dir = Path(args.results).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    selected = [b for b in BENCHES if not args.only or b[0] in args.only]
    began = time.perf_counter()
    results = run_benches(selected, results_dir)
    rows = suite_rows(results)
    suite = {
        "command": "python -m bench.run_all" + (f" --only {' '.join(args.only)}" if args.only else ""),
        "machine": f"{machine()}, Python {platform.python_version()}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - began,
        "rows": [dataclasses.asdict(r) for r in rows],
        "results": results,
    }
    print("\n" + text_table(rows), flush=True)
    suite_file = results_dir / "suite.json"
    suite_file.write_text(json.dumps(suite, indent=2))
    table_file = results_dir / "suite_table.md"
    table_file.write_text(markdown_table(rows) + "\n")
    tracking_uri = args.tracking_uri or f"sqlite:///{results_dir / 'mlflow.db'}"
    run_id = log_to_mlflow(rows, suite, tracking_uri, suite_file, table_file)
    print(f"\nJSON: {suite_file}\nMLflow: {tracking_uri} (experiment {EXPERIMENT}, run {run_id})")
    Path(args.readme).write_text(bench_readme(rows, suite))
    print(f"table: {args.readme}")
    return 1 if any(r.name == "(failed)" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
