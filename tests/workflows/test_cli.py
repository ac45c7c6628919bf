"""workflows/full.py as users call it, in a subprocess."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DEMO_RECIPE, REPO_ROOT

FULL = str(REPO_ROOT / "workflows" / "full.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, FULL, *args], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT
    )


def test_help_lists_every_flag():
    result = _run("--help")
    assert result.returncode == 0
    for flag in ("--config", "--set", "--artifacts", "--only", "--from", "--force", "--dry-run"):
        assert flag in result.stdout
    assert "scenes, tiny_models" in result.stdout


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path):
    root = tmp_path / "never-created"
    result = _run("--config", str(DEMO_RECIPE), "--artifacts", str(root), "--dry-run")
    assert result.returncode == 0, result.stderr
    plan_rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.strip()}
    assert plan_rows.get("scenes") == "run" and plan_rows.get("tiny_models") == "run", result.stdout
    # the temperature the vision tower will train at (the demo's tiny tower has no logit scale of its own)
    assert "train_vision: logit scale starts at train_vision.logit_scale_init = 2.6592" in result.stdout
    assert not root.exists()


def test_config_errors_exit_2_naming_the_field(tmp_path):
    result = _run(
        "--config", str(DEMO_RECIPE), "--artifacts", str(tmp_path), "--set", "scenes.image_size_px=big"
    )
    assert result.returncode == 2
    assert "scenes.image_size_px: expected an integer, got 'big'" in result.stderr
    result = _run(
        "--config", str(DEMO_RECIPE), "--artifacts", str(tmp_path), "--only", "tiny_models", "--dry-run"
    )
    assert result.returncode == 2
    assert "upstream stage scenes has no complete artifact" in result.stderr


def test_a_stage_cli_reads_a_recipe_section_through_extends():
    """configs/cc3m.yaml keeps only its url table; its embed section comes from the base it extends."""
    import argparse

    from pipelines.embed.stage import STAGE
    from workflows.cli.standalone import section_config

    args = argparse.Namespace(config=str(REPO_ROOT / "configs" / "cc3m.yaml"), overrides=["num_actors=2"])
    config = section_config(args, STAGE, {"encoder": "owner/encoder"})
    assert config.dense_caption_source == "recaption" and config.dtype == "float16"
    assert config.batch_size == 256 and config.num_actors == 2 and config.encoder == "owner/encoder"
