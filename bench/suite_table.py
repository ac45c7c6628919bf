"""The suite table's row and its renderings: plain text for the terminal, Markdown for bench/README.md,
and an MLflow metric key per row."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SuiteRow:
    bench: str
    name: str
    figure: float | None  # None: not measured (a skipped part); `note` says why
    unit: str
    baseline: str
    ratio: float | None
    note: str = ""


def _cells(row: SuiteRow) -> list[str]:
    figure = "-" if row.figure is None else f"{row.figure:g}"
    ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
    return [row.bench, row.name, figure, row.unit, row.baseline, ratio, row.note]


HEADER = ["bench", "measurement", "figure", "unit", "baseline (same run)", "ratio", "note"]


def text_table(rows: list[SuiteRow]) -> str:
    cells = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[SuiteRow]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def metric_name(row: SuiteRow) -> str:
    """An MLflow metric key for the row's ratio (letters, digits, _ . - / only)."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in row.name.lower()).strip("_")
    while "__" in slug:
        slug = slug.replace("__", "_")
    return f"{row.bench}/{slug}"
