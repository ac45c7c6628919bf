"""The README and docs/ quote numbers that live elsewhere; each is checked against its one source: the
recipes' `resources` (what --dry-run prints), bench/README.md (measured wall times), and the long-caption
experiment's results as the run wrote them (docs/long_caption/). Every docs page is linked from the
README and every relative link resolves."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT
from workflows.full import format_resources
from workflows.recipe import load_recipe
from workflows.registry import CHAIN

README = (REPO_ROOT / "README.md").read_text()
# CPU recipes whose cost is measured: the bench row that measures it (bench/README.md, cold run).
MEASURED_BY = {"demo.yaml": "demo_walltime", "long_caption_experiment.yaml": "long_caption_walltime"}


def _recipe_rows() -> dict[str, list[str]]:
    section = README.split("## Recipes\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0].endswith(".yaml`"):
            rows[cells[0].strip("`")] = cells
    return rows


def _bench_value(name: str, what: str) -> float:
    bench = (REPO_ROOT / "bench" / "README.md").read_text()
    for line in bench.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0] == name and cells[1] == what:
            return float(cells[2])
    raise AssertionError(f"bench/README.md has no row {name} / {what}")


def test_the_readmes_recipe_table_is_what_the_recipes_and_the_benches_say():
    rows = _recipe_rows()
    assert sorted(rows) == sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml"))
    for name, cells in rows.items():
        gpus, cost = cells[4], cells[5]
        resources = load_recipe(str(REPO_ROOT / "configs" / name), CHAIN, ()).resources
        if resources is None:
            seconds = _bench_value(MEASURED_BY[name], "cold run")
            assert gpus == "none" and cost == f"{round(seconds / 60)} min measured", (name, cost, seconds)
            continue
        hours = sum(e.hours for e in resources.estimates)
        gpu_hours = sum(e.gpus * e.hours for e in resources.estimates)
        assert gpus == f"{resources.gpus} x {resources.gpu_type}", (name, gpus)
        assert cost == f"{round(hours)} h, {round(gpu_hours)} GPU-h estimated", (name, cost, hours, gpu_hours)


def test_the_dry_run_example_in_the_docs_is_what_dry_run_prints():
    resources = load_recipe(str(REPO_ROOT / "configs" / "cc3m.yaml"), CHAIN, ()).resources
    assert format_resources(resources) in (REPO_ROOT / "docs" / "recipes.md").read_text()


def test_every_docs_page_is_linked_from_the_readme_and_every_link_resolves():
    pages = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "docs").glob("*.md"))
    assert all(f"]({page})" in README for page in pages), [p for p in pages if f"]({p})" not in README]
    for document in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" in target:
                continue
            assert (document.parent / target).exists(), f"{document.name}: broken link {target}"


def test_the_readme_is_one_screenful_per_question():
    assert len(README.splitlines()) <= 250


def test_the_readmes_results_are_the_experiments_report():
    """The results section's tables against the report the run wrote (docs/long_caption/: summary.json
    and claims.json, copied from the long_caption_experiment artifact that table.md came from)."""
    import json

    folder = REPO_ROOT / "docs" / "long_caption"
    summary = json.loads((folder / "summary.json").read_text())["summary"]
    claims = {c["claim"]: c for c in json.loads((folder / "claims.json").read_text())}
    section = README.split("## The miniature", 1)[1].split("\n## ", 1)[0]
    kinds = ("long", "short", "l2", "syn")
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in summary:
            rows[cells[0]] = cells[1:]
        elif cells[0] in claims:
            claim = claims[cells[0]]
            shown = [f"{100 * claim[k]:.1f}" for k in ("arm", "other", "gap", "seed_std")]
            assert cells[1:] == [*shown, "yes" if claim["holds"] else "no"], cells
            claims.pop(cells[0])
    assert sorted(rows) == sorted(summary) and not claims, (sorted(rows), list(claims))
    for arm, cells in rows.items():
        recalls = [summary[arm][f"{k}_{d}_r1"] for k in kinds for d in ("i2t", "t2i")]
        expected = [f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for r in recalls]
        assert cells == expected, arm
    table = (folder / "table.md").read_text()
    assert all(f"| {arm} |" in table for arm in summary)
