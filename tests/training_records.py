"""What two training runs are compared on: the weights they saved and the per-step losses they logged."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient
from safetensors.torch import load_file


def saved_tensors(folder: Path) -> dict[str, object]:
    """Every tensor of every safetensors file in `folder`, keyed "<file>/<tensor>"."""
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update({f"{path.name}/{name}": t for name, t in load_file(path).items()})
    assert tensors, f"no safetensors in {folder}"
    return tensors


def assert_same_tensors(first: Path, second: Path) -> None:
    """Bit-identical: the same names, and torch.equal for each."""
    import torch

    a, b = saved_tensors(first), saved_tensors(second)
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def logged_steps(tracking_uri: str, stage: str, metric: str, experiment: str = "llm2clip-demo") -> dict:
    """step -> every value of `metric` logged at that step by the stage's runs that executed (a resumed
    run logs again the steps it repeats)."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.stage = '{stage}' and tags.cache_hit = 'false'"
    )
    steps: dict[int, list[float]] = {}
    for run in runs:
        for point in client.get_metric_history(run.info.run_id, metric):
            steps.setdefault(point.step, []).append(point.value)
    return steps


def sqlite_store(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"
