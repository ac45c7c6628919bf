"""models/ and ops/ are the library layer: importing them must not pull in Ray, MLflow or the app layers."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO_ROOT

FORBIDDEN = ("ray", "mlflow", "pipelines", "workflows")
LIBRARY_PACKAGES = ("models", "ops")


def _modules(package: str) -> list[str]:
    return [
        f"{package}.{p.stem}" if p.stem != "__init__" else package
        for p in sorted((REPO_ROOT / package).glob("*.py"))
    ]


def test_source_has_no_forbidden_imports():
    offenders = []
    for package in LIBRARY_PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders


def test_importing_the_library_loads_no_forbidden_module():
    modules = [m for package in LIBRARY_PACKAGES for m in _modules(package)]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
