"""docs/configuration.md is what the config dataclasses say today: regenerated and compared."""

from __future__ import annotations

from workflows.config_reference import OUTPUT, reference_markdown, rows
from workflows.registry import STAGES


def test_the_configuration_reference_is_current():
    assert OUTPUT.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run `python -m workflows.config_reference`"
    )


def test_every_setting_of_every_stage_is_listed_with_its_key_rule():
    text = OUTPUT.read_text()
    for name, spec in STAGES.items():
        assert f"## `{name}`" in text
        for setting, *_, key, _meaning in rows(spec.config_cls):
            assert f"| `{setting}` |" in text
            assert key in ("yes", "no", "when set")
    # Spot checks against the dataclasses: an unkeyed runtime setting, a nested one, a comment's meaning.
    vision = {row[0]: row for row in rows(STAGES["train_vision"].config_cls)}
    assert vision["decode_processes"][4] == "no" and vision["max_steps"][4] == "yes"
    assert vision["fused_adamw"][4] == "when set" and "images" in vision["batch_size_per_worker"][5]
    finetune = {row[0]: row for row in rows(STAGES["finetune_text"].config_cls)}
    assert "lora.rank" in finetune and finetune["lora.rank"][5] == "LoRA rank"
