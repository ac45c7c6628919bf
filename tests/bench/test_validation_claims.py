"""bench.validation_claims: the held-out claims' rule applied to a run's validation recalls."""

from __future__ import annotations

import json

import pytest

from bench.validation_claims import claims_table, find_summary, validation_claims
from experiments.long_caption.report import METRICS


def _summary(r1: dict[str, dict[str, float]], std: float) -> dict:
    """Every arm's validation and held-out metrics; val R@1 per caption kind from r1, held-out all 0.9."""
    summary = {}
    for arm, kinds in r1.items():
        summary[arm] = {}
        for metric in METRICS:
            kind = metric.split("_")[0]
            summary[arm][f"val_{metric}"] = {"mean": kinds.get(kind, 0.0), "std": std}
            summary[arm][metric] = {"mean": 0.9, "std": 0.0}
    return {"summary": summary, "sizes": {"validation": 1000, "held_out": 256}}


def _four_arms(llm2clip_syn: float, base_llm_long: float) -> dict[str, dict[str, float]]:
    """Validation R@1 by arm and caption kind: llm2clip at 30% on long captions and 1.2% on the second
    language, the text towers at 0.1% on it (chance, over 1,000 scenes)."""
    return {
        "llm2clip": {"long": 0.30, "l2": 0.012, "syn": llm2clip_syn},
        "base_llm": {"long": base_llm_long},
        "clip_77": {"long": 0.07, "l2": 0.001},
        "clip_long": {"long": 0.50, "l2": 0.001, "syn": 0.001},
    }


def test_validation_claims_follow_the_validation_recalls_not_the_held_out_ones(tmp_path):
    run = _summary(_four_arms(llm2clip_syn=0.14, base_llm_long=0.25), std=0.02)
    claims = {claim["claim"][:4]: claim for claim in validation_claims(run)}
    assert not any(name.startswith("(A)") for name in claims)  # CRA is a held-out figure only
    assert claims["(B) "]["holds"] is True and claims["(B) "]["gap"] == pytest.approx(0.05)
    assert claims["(D) "]["holds"] is False  # 1.2% vs 0.1%: the gap is under 3 stds of 2%
    assert claims["(E) "]["holds"] is True
    assert claims["(E')"]["holds"] is False  # 14 is under half of 30

    tighter = _summary(_four_arms(llm2clip_syn=0.16, base_llm_long=0.29), std=0.002)
    tight_claims = {claim["claim"][:4]: claim for claim in validation_claims(tighter)}
    assert tight_claims["(B) "]["holds"] is True and tight_claims["(D) "]["holds"] is True
    assert tight_claims["(E')"]["holds"] is True

    table = claims_table({"first": validation_claims(run), "second": validation_claims(tighter)}).splitlines()
    assert table[0] == "| claim (validation R@1, mean of I2T and T2I, %) | first | second |"
    (d_row,) = [line for line in table if line.startswith("| (D)")]
    assert d_row.endswith("(gap 1.1, std 2.0): fails | 1.2 vs 0.1 (gap 1.1, std 0.2): holds |")


def test_find_summary_takes_a_root_a_stage_folder_or_the_file_and_refuses_two_runs(tmp_path):
    stage = tmp_path / "long_caption_experiment" / "abc"
    stage.mkdir(parents=True)
    (stage / "summary.json").write_text(json.dumps({}))
    for given in (tmp_path, stage, stage / "summary.json"):
        assert find_summary(given) == stage / "summary.json"
    (tmp_path / "long_caption_experiment" / "def").mkdir()
    (tmp_path / "long_caption_experiment" / "def" / "summary.json").write_text("{}")
    with pytest.raises(SystemExit, match="2 experiment runs"):
        find_summary(tmp_path)
    with pytest.raises(SystemExit, match=r"no long_caption_experiment summary\.json"):
        find_summary(tmp_path / "long_caption_experiment")
