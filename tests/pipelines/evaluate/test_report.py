"""The evaluation table: the standard recall as the headline, and the strict one with the tied queries
beside it where duplicates make them differ."""

from __future__ import annotations

import torch

from ops.retrieval_metrics import benchmark_recalls
from pipelines.evaluate.report import tables


def test_the_table_shows_strict_recall_and_ties_only_where_they_differ():
    image = torch.eye(4)
    duplicated = torch.eye(4)
    duplicated[3] = duplicated[2]  # captions of images 2 and 3 are the same text
    results = {
        "dupes": {**benchmark_recalls(image, duplicated, torch.arange(4)), "images": 4.0, "captions": 4.0},
        "clean": {**benchmark_recalls(image, torch.eye(4), torch.arange(4)), "images": 4.0, "captions": 4.0},
    }
    # image 2 ties its own caption with caption 3 (a hit in index order, a miss when strict); image 3 and
    # caption 3 tie at zero with everything before them (a miss either way)
    assert results["dupes"]["i2t_r1"] == 0.75 and results["dupes"]["i2t_r1_strict"] == 0.5
    markdown, html = tables(results, "model")
    ties = markdown.split("## Ties", 1)[1]
    assert "| dupes | 75.0 | 50.0 | 75.0 | 75.0 | 2 / 1 |" in ties and "clean" not in ties
    assert "| model | 75.0 | 75.0 | 100.0 | 100.0 |" in markdown  # the headline: standard R@1
    assert "<h2>Ties" in html
