"""The layers: models/ and ops/ are the library (no Ray, MLflow or app layers); demo/ builds on the
library and the stage contract only; the production stages never reach into the demo or experiments;
and no module of the project takes part in an import cycle, deferred imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("models", "ops", "pipelines", "workflows", "demo", "experiments", "bench")
APP_LAYERS = ("pipelines", "workflows", "demo", "experiments", "bench")
# package -> top-level names it must not import, at module level or inside a function
FORBIDDEN = {
    "models": ("ray", "mlflow", *APP_LAYERS),
    "ops": ("ray", "mlflow", *APP_LAYERS),
    "demo": ("pipelines", "workflows", "experiments", "bench"),
    "pipelines": ("workflows", "demo", "experiments", "bench"),
}
LIBRARY_PACKAGES = ("models", "ops")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path) -> list[str]:
    """Every absolute import of a file; `from a.b import c` gives a.b.c and a.b."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
    return names


def _modules(package: str) -> list[str]:
    return [_module_name(p) for p in sorted((REPO_ROOT / package).rglob("*.py"))]


def test_source_has_no_forbidden_imports():
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in (REPO_ROOT / package).rglob("*.py"):
            offenders += [
                f"{path.relative_to(REPO_ROOT)}: {name}"
                for name in _imported_names(path)
                if name.split(".")[0] in forbidden
            ]
    assert not sorted(set(offenders))


def test_the_project_has_no_import_cycle():
    files = {_module_name(p): p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in _imported_names(path):
            while name and name not in files:  # a.b.SomeClass -> the module a.b
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start:
                    return [*path, start]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
        return None

    cycles = [cycle for module in sorted(graph) if (cycle := cycle_from(module))]
    assert not cycles, " -> ".join(cycles[0])


def _packages_loaded_by(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """The top-level packages among `watched` that importing `modules` in a fresh interpreter loads."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({watched!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip())


def test_importing_the_library_loads_no_forbidden_module():
    modules = [m for package in LIBRARY_PACKAGES for m in _modules(package)]
    assert _packages_loaded_by(modules, ("ray", "mlflow", *APP_LAYERS)) == []


def test_the_workflow_and_its_registry_load_no_deep_learning_library():
    """`--help`, config errors and plans come back in about a second: a stage's torch, transformers and
    vLLM load when it runs (its stage.py imports them inside its run function), not when the workflow
    imports the registry. (An import at a stage module's top took `llm2clip run --help` to 9.6 s.)"""
    heavy = ("torch", "transformers", "timm", "vllm", "sklearn", "mlflow")
    assert _packages_loaded_by(["workflows.full", "workflows.cli.main"], heavy) == []
