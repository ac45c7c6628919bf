"""Every command of the README's "Running the workflow" block, run as a user types it (a subprocess from
the repository root), on a copy of the suite's finished demo and at its small size: the `--set` overrides
of SMALL_DEMO go first, so a command's own `--set` wins. Commands that would run for minutes get
`--dry-run` (their real runs are tests/workflows/test_reruns.py and the demo job itself)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SMALL_DEMO

README = REPO_ROOT / "README.md"
# Each command of the block -> whether it runs for real ("run") or as a plan ("dry-run").
DEMO = "python workflows/full.py --config configs/demo.yaml"
HOW = {
    "llm2clip run --config configs/demo.yaml": "run",  # the console script; every stage cached: seconds
    DEMO: "run",
    f"{DEMO} --dry-run": "run",
    f"{DEMO} --set scenes.num_train=64 --set tiny_models.seed=1": "dry-run",
    f"{DEMO} --only evaluate": "dry-run",
    f"{DEMO} --from embed": "dry-run",
    f"{DEMO} --force recaption": "dry-run",
    "python workflows/full.py --help": "run",
}


def readme_block(heading: str) -> list[str]:
    """The commands of the first bash block under `heading`, comments dropped."""
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_the_table_covers_the_readmes_block():
    assert readme_block("Running the workflow") == list(HOW)


@pytest.fixture(scope="module")
def root(demo_root, tmp_path_factory):
    """One copy of the finished demo for the block (no command here changes an artifact)."""
    copy = tmp_path_factory.mktemp("readme") / "artifacts"
    shutil.copytree(demo_root, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlflow-artifacts"))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("command", list(HOW))
def test_readme_command_runs(command, root, ray_cluster):
    program, *arguments = shlex.split(command)
    if program == "llm2clip":  # the console script pip installed beside the interpreter
        launch = [str(Path(sys.executable).with_name("llm2clip")), arguments.pop(0)]
    else:
        assert program == "python"
        launch = [sys.executable, arguments.pop(0)]
    small = [word for assignment in SMALL_DEMO for word in ("--set", assignment)]
    extra = ["--dry-run"] if HOW[command] == "dry-run" else []
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_cluster.address  # a command that runs a stage joins the suite's cluster
    result = subprocess.run(
        [*launch, "--artifacts", str(root), *small, *arguments, *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if "--help" in arguments:
        assert "usage: workflows/full.py" in result.stdout
    elif extra or "--dry-run" in arguments:
        assert "will run:" in result.stdout or "nothing to run" in result.stdout, result.stdout
    else:
        assert "every stage was cached: nothing executed" in result.stdout, result.stdout
