"""One command for the reliability report: runs every test marked `reliability` (kill-and-resume of each
stage, Ray Train worker recovery, the bad-input corpus, concurrent workflows) and prints, per case, whether
it passed and what its bad input got.

    python -m tests.reliability.report            # all cases (about 10 minutes on 2 cores)
    python -m tests.reliability.report -k shard   # a subset: extra arguments go to pytest
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def read_junit(path: Path) -> list[dict[str, str]]:
    """One row per test case: area (test module), case, outcome, seconds, got."""
    rows = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        message = ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[kind]
                message = (element.get("message") or "").splitlines()[0] if element.get("message") else ""
        if outcome == "skipped" and message.startswith("collection skipped"):
            continue  # a module skipped at import (needs a GPU stack), not a case
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        got = properties.get("got") or message
        rows.append(
            {
                "area": case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_"),
                "case": case.get("name", ""),
                "outcome": outcome,
                "seconds": f"{float(case.get('time') or 0):.1f}",
                "got": got,
            }
        )
    return rows


def format_report(rows: list[dict[str, str]]) -> str:
    lines = []
    for area in dict.fromkeys(r["area"] for r in rows):
        lines.append(f"\n== {area}")
        for r in (r for r in rows if r["area"] == area):
            lines.append(f"  [{r['outcome']:>7}] {r['case']}  ({r['seconds']} s)")
            if r["got"]:
                lines.append(f"            got: {r['got']}")
    passed = sum(r["outcome"] == "passed" for r in rows)
    failed = sum(r["outcome"] in ("FAILED", "ERROR") for r in rows)
    lines.append(
        f"\n{len(rows)} cases tried: {passed} passed, {failed} failed, {len(rows) - passed - failed} skipped"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="reliability-") as scratch:
        junit = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "reliability", f"--junitxml={junit}"]
        command += ["-o", "junit_family=xunit1", "-p", "no:cacheprovider", *pytest_args, "tests"]
        print("$ " + " ".join(command[2:]), flush=True)
        completed = subprocess.run(command, cwd=REPO_ROOT, check=False)
        if not junit.exists():
            print("pytest wrote no results (see its output above)", file=sys.stderr)
            return completed.returncode or 1
        rows = read_junit(junit)
    print(format_report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
