"""General text pairs mixed into fine-tuning: read from parquet / JSON lines with bad rows rejected and
kept, one task per global batch (dealt by seed and step, so a resume sees the same batches), per-query
instructions left out of pooling, and a mixed run that learns."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models.text_encoder import LLMTextEncoder, build_text_inputs
from models.text_encoder_config import LoraSpec, TextEncoderConfig
from models.text_encoder_io import apply_lora
from ops.errors import BadInputError
from ops.retrieval_metrics import caption_retrieval_accuracy
from pipelines.finetune_text.batches import pair_batches
from pipelines.finetune_text.config import FinetuneTextConfig, TextPairSource
from pipelines.finetune_text.text_pairs import read_text_pairs, with_task_columns
from tests.pipelines.finetune_text.test_loop import _pairs, _settings, _tiny_llm, _train

INSTRUCTION = "Given a sentence, retrieve a detailed relevant sentence"


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_text_pairs_are_read_and_bad_rows_kept_with_a_reason(tmp_path):
    rows = [
        {"query": "q0", "positive": "p0", "negative": "n0"},
        {"query": "", "positive": "p1", "negative": "n1"},
        {"query": "q2", "positive": None, "negative": "n2"},
        {"query": "q3", "positive": "p3", "negative": "  "},
    ]
    source = TextPairSource(
        name="e5", path=_write_jsonl(tmp_path / "e5.jsonl", rows), instruction=INSTRUCTION
    )
    kept, rejected = read_text_pairs(source, need_negatives=True)
    assert kept.column("caption_1").to_pylist() == ["q0"] and kept.column("hard_negative_2").to_pylist() == [
        "n0"
    ]
    assert kept.column("query_instruction").to_pylist() == [INSTRUCTION + "; "]
    assert kept.column("task").to_pylist() == ["e5"] and kept.column("key").to_pylist() == ["e5/0"]
    assert rejected.column("row").to_pylist() == [1, 2, 3]
    assert rejected.column("reason").to_pylist() == ["missing_query", "missing_positive", "missing_negative"]
    without_negatives, rejected = read_text_pairs(source, need_negatives=False)
    assert without_negatives.num_rows == 2 and "hard_negative_2" not in without_negatives.column_names

    pq.write_table(pa.Table.from_pylist([{"query": "q", "answer": "a"}]), tmp_path / "bad.parquet")
    with pytest.raises(BadInputError, match=r"bad.parquet has no column \['positive'\]"):
        read_text_pairs(TextPairSource(name="bad", path=str(tmp_path / "bad.parquet")), need_negatives=False)
    with pytest.raises(BadInputError, match=r"nowhere\.jsonl: not found"):
        read_text_pairs(TextPairSource(name="x", path=str(tmp_path / "nowhere.jsonl")), need_negatives=False)


def test_config_refuses_random_sides_and_a_second_instruction_with_query_instructions():
    source = TextPairSource(name="e5", path="e5.jsonl")
    with pytest.raises(ValueError, match="query_side"):
        FinetuneTextConfig(text_pairs=(source,), query_side="random")
    with pytest.raises(ValueError, match=r"encoder\.instruction"):
        FinetuneTextConfig(
            caption_query_instruction=INSTRUCTION, encoder=TextEncoderConfig(instruction="Caption: ")
        )
    with pytest.raises(ValueError, match="distinct names"):
        FinetuneTextConfig(text_pairs=(source, source))


def _mixed_table(captions: int, texts: int) -> pa.Table:
    caption_rows = pa.Table.from_pylist(
        [{"key": f"c{i}", "kind": "original_dense", **row} for i, row in enumerate(_pairs("train", captions))]
    )
    text_rows = pa.Table.from_pylist(
        [
            {
                "key": f"t{i}",
                "kind": "text_pair",
                **row,
                "task": "e5",
                "query_instruction": INSTRUCTION + "; ",
            }
            for i, row in enumerate(_pairs("text", texts))
        ]
    )
    return pa.concat_tables([with_task_columns(caption_rows, ""), text_rows]).drop_columns(["key", "kind"])


def test_every_global_batch_holds_one_task_and_a_resume_sees_the_same_batches():
    table = _mixed_table(captions=40, texts=24)
    tasks = {row["caption_1"]: row["task"] for row in table.to_pylist()}
    # 2 workers x 4: captions give 5 global batches an epoch, text pairs 3
    ranks = [pair_batches(table, 4, rank=r, world=2, seed=7) for r in (0, 1)]
    steps = [[next(ranks[0]), next(ranks[1])] for _ in range(16)]
    for step in steps:
        batch_tasks = {tasks[q] for part in step for q in part["query_side"]}
        assert len(batch_tasks) == 1, batch_tasks
        instructions = {i for part in step for i in part["query_instruction"]}
        assert instructions == ({INSTRUCTION + "; "} if batch_tasks == {"e5"} else {""})
    epoch = steps[:8]
    assert sum(tasks[s[0]["query_side"][0]] == "e5" for s in epoch) == 3
    seen = [q for step in epoch for part in step for q in part["query_side"]]
    assert len(seen) == len(set(seen)) == 64  # no pair twice in an epoch
    resumed = pair_batches(table, 4, rank=1, world=2, seed=7, start_step=11)
    assert [next(resumed) for _ in range(5)] == [step[1] for step in steps[11:16]]


def test_query_instructions_are_left_out_of_pooling():
    tokenizer, _, config = _tiny_llm()
    texts = ["a blue square", "a red circle"]
    plain = build_text_inputs(tokenizer, texts, config)
    instructed = build_text_inputs(tokenizer, texts, config, [INSTRUCTION + "; ", ""])
    assert instructed["pool_mask"][0].sum() == plain["pool_mask"][0].sum()  # the caption's tokens only
    pooled = instructed["input_ids"][0][instructed["pool_mask"][0].bool()]
    assert tokenizer.decode(pooled) == " " + texts[0]  # BPE joined the instruction's space to "a"
    width = plain["pool_mask"].shape[1]  # (the instructed batch is padded to its longer first row)
    assert torch.equal(instructed["pool_mask"][1, :width], plain["pool_mask"][1])


def test_a_mixed_run_learns_both_tasks():
    tokenizer, backbone, config = _tiny_llm()
    encoder = LLMTextEncoder(apply_lora(backbone, LoraSpec(rank=16, alpha=32, dropout=0.0)), config)
    held_out = _pairs("eval", 64)

    def cra():
        first = encoder.encode(tokenizer, [r["caption_1"] for r in held_out])
        return caption_retrieval_accuracy(
            first, encoder.encode(tokenizer, [r["caption_2"] for r in held_out])
        )

    base = cra()
    rows = _mixed_table(captions=192, texts=128).to_pylist()  # two tasks, the second with an instruction
    _, losses = _train(encoder, tokenizer, rows, _settings(warmup_steps=5, max_steps=60))
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5
    assert cra() > base + 0.3  # captions encoded without any instruction, as the embed stage does
