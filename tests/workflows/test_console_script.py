"""The `llm2clip` console script that `pip install` puts beside the interpreter: its help and each
subcommand's, run as a user types them (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workflows.cli.main import COMMANDS

SCRIPT = Path(sys.executable).with_name("llm2clip")


def _run(*arguments: str) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), f"{SCRIPT} missing: install the project (make venv) to get the console script"
    return subprocess.run([str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)


def test_llm2clip_help_lists_every_command():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: llm2clip <command>")
    assert all(f"  {name} " in result.stdout for name in COMMANDS)
    unknown = _run("train")
    assert unknown.returncode == 2 and "unknown command 'train'" in unknown.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_subcommand_has_its_own_help(command):
    result = _run(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: llm2clip {command} "), result.stdout[:200]
