"""The long-caption experiment's claims checked on its validation split, the figures a setting is chosen on.

    python -m bench.validation_claims RUN [RUN ...]

RUN is a finished run's artifact root (its long_caption_experiment/<key>/summary.json is read), the stage
folder itself, or a summary.json. The stage's report checks the claims on the held-out scenes; the same
rule (experiments/long_caption/report.py: check_claims) applied to the validation recalls the stage also
records (the val_ metrics) is what a setting must pass before its held-out figures are looked at. (A) is
left out: its CRA is measured on held-out pairs only. Chance for (D) is one in the validation split's
size. One column per run, side by side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.long_caption.report import check_claims


def find_summary(path: Path) -> Path:
    """A run root, a long_caption_experiment stage folder or a summary.json -> the summary.json."""
    if path.is_file():
        return path
    for pattern in ("summary.json", "long_caption_experiment/*/summary.json"):
        found = sorted(path.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise SystemExit(f"{path}: {len(found)} experiment runs ({', '.join(map(str, found))}); name one")
    raise SystemExit(f"{path}: no long_caption_experiment summary.json under it")


def validation_claims(summary_json: dict) -> list[dict]:
    """The claims (B)-(E') on the validation recalls, by the held-out claims' own rule."""
    validation = {
        arm: {name.removeprefix("val_"): value for name, value in metrics.items() if name.startswith("val_")}
        for arm, metrics in summary_json["summary"].items()
    }
    if not any(validation.values()):
        raise SystemExit("the summary has no validation recalls (val_ metrics)")
    return check_claims(validation, cra=None, chance=1 / summary_json["sizes"]["validation"])


def claims_table(columns: dict[str, list[dict]]) -> str:
    """Markdown: one row per claim, one 'arm vs other (gap, std): holds' cell per run; R@1 in %."""
    names = list(columns)
    by_run = {name: {claim["claim"]: claim for claim in claims} for name, claims in columns.items()}
    claim_names = list(dict.fromkeys(claim["claim"] for claims in columns.values() for claim in claims))
    lines = ["| claim (validation R@1, mean of I2T and T2I, %) | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for claim_name in claim_names:
        cells = []
        for name in names:
            claim = by_run[name].get(claim_name)
            if claim is None:
                cells.append("not measured")
                continue
            verdict = "holds" if claim["holds"] else "fails"
            cells.append(
                f"{100 * claim['arm']:.1f} vs {100 * claim['other']:.1f} "
                f"(gap {100 * claim['gap']:.1f}, std {100 * claim['seed_std']:.1f}): {verdict}"
            )
        lines.append(f"| {claim_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="artifact roots, stage folders or summary.json files"
    )
    args = parser.parse_args()
    columns = {}
    for run in args.runs:
        summary_path = find_summary(run)
        columns[str(run)] = validation_claims(json.loads(summary_path.read_text(encoding="utf-8")))
    print(claims_table(columns))


if __name__ == "__main__":
    main()
