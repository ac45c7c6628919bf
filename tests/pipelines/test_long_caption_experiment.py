"""The long-caption experiment recipe on the small demo: the demo's stages come from cache, the three arms
train for real, and the report says what it measured."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from models.text_tower_clip import tokenize_for_clip
from pipelines.long_caption_experiment import check_claims, summarize
from tests.conftest import REPO_ROOT, SMALL_DEMO, run_workflow
from tests.workflows.test_full_workflow import _executed, _only_complete

RECIPE = REPO_ROOT / "configs" / "long_caption_experiment.yaml"
QUICK = (
    # The demo's scenes and encoder length, so every stage of the demo comes from demo_root's cache.
    "scenes.max_objects=4",
    "finetune_text.encoder.max_length=160",
    "long_caption_experiment.seeds=[0, 1]",
    "long_caption_experiment.max_steps=60",
    "long_caption_experiment.batch_size=16",
)


@pytest.mark.slow
def test_the_experiment_reuses_the_demo_and_reports_every_arm_and_seed(demo_root, capsys):
    capsys.readouterr()
    assert run_workflow(demo_root, overrides=(*SMALL_DEMO, *QUICK), recipe=RECIPE) == 0
    assert _executed(capsys.readouterr().out) == ["long_caption_experiment"]

    folder = _only_complete(demo_root, "long_caption_experiment")
    results = json.loads((folder / "results.json").read_text())
    assert sorted((r["arm"], r["seed"]) for r in results) == sorted(
        (arm, seed) for arm in ("llm2clip", "base_llm", "clip_77") for seed in (0, 1)
    )
    for row in results:
        # Every arm learned something: its training loss fell.
        assert row["loss_last"] < row["loss_first"], row
        assert all(0.0 <= row[m] <= 1.0 for m in row if m.endswith(("_r1", "_r5")))
    # 16 held-out scenes: chance R@5 is 5/16. The LLM2CLIP arm finds long captions well above it.
    llm2clip = [r for r in results if r["arm"] == "llm2clip"]
    assert sum(r["long_i2t_r5"] + r["long_t2i_r5"] for r in llm2clip) / (2 * len(llm2clip)) > 5 / 16

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sizes"]["held_out"] == 16 and summary["sizes"]["train"] == 48
    # The scenes' dense captions are longer than CLIP's context: the 77-token arm really loses text.
    assert summary["sizes"]["long_cut"] > 0.25 and summary["sizes"]["short_cut"] == 0.0
    claims = json.loads((folder / "claims.json").read_text())
    assert [c["claim"] for c in claims] == [
        "llm2clip beats clip_77 on long captions",
        "base_llm falls well below llm2clip on long captions",
    ]
    table = (folder / "table.md").read_text()
    assert all(arm in table for arm in ("llm2clip", "base_llm", "clip_77"))
    assert (folder / "recalls.png").read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient(f"sqlite:///{demo_root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("llm2clip-long-caption-experiment")
    run = next(
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("stage") == "long_caption_experiment"
    )
    assert run.data.metrics["llm2clip_long_i2t_r1_mean"] == pytest.approx(
        summary["summary"]["llm2clip"]["long_i2t_r1"]["mean"]
    )
    history = client.get_metric_history(run.info.run_id, "clip_77_long_t2i_r1")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"table.md", "recalls.png"} <= artifacts


def test_summary_and_claims_follow_the_numbers():
    results = [
        {"arm": arm, "seed": seed, **dict.fromkeys(metrics, value), "loss_first": 2.0, "loss_last": 1.0}
        for seed in (0, 1)
        for arm, value in (("llm2clip", 0.6 + 0.02 * seed), ("base_llm", 0.1), ("clip_77", 0.5))
        for metrics in [[f"{k}_{d}_r{r}" for k in ("short", "long") for d in ("i2t", "t2i") for r in (1, 5)]]
    ]
    summary = summarize(results, ("llm2clip", "base_llm", "clip_77"))
    assert summary["llm2clip"]["long_i2t_r1"]["mean"] == pytest.approx(0.61)
    assert summary["base_llm"]["long_i2t_r1"]["std"] == 0.0
    first, second = check_claims(summary)
    assert first["holds"] and first["gap"] == pytest.approx(0.11)
    assert second["holds"] and second["gap"] == pytest.approx(0.51)
    summary["clip_77"]["long_i2t_r1"]["mean"] = 0.9
    summary["clip_77"]["long_t2i_r1"]["mean"] = 0.9
    assert not check_claims(summary)[0]["holds"]


def test_clip_tokens_are_cut_at_the_context_and_the_cut_is_counted(tiny_models_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models_dir / "llm")
    short, long = "a red cube", " ".join(["a red cube left of a blue sphere"] * 30)
    tokens, cut = tokenize_for_clip(tokenizer, [short, long], max_tokens=77)
    assert tokens["input_ids"].shape == (2, 77) and cut == 0.5
    assert int(tokens["attention_mask"][1].sum()) == 77 and int(tokens["attention_mask"][0].sum()) < 77
    assert torch.equal(
        tokens["input_ids"][0][: int(tokens["attention_mask"][0].sum())],
        tokenizer(short, return_tensors="pt")["input_ids"][0],
    )
