"""The progress lines: when they come, what they say, and their arithmetic (a fake clock)."""

from __future__ import annotations

from ops.progress import ShardProgress, StepProgress, clock_text, lines_every


def test_clock_text_and_spacing():
    assert clock_text(0) == "0:00:00" and clock_text(492) == "0:08:12" and clock_text(70 * 3600) == "70:00:00"
    assert lines_every(3200) == 100 and lines_every(200) == 10 and lines_every(5) == 1


def test_step_lines_come_at_the_first_step_every_n_steps_and_at_the_end_with_rate_and_eta():
    said, now = [], [0.0]
    progress = StepProgress("train_vision", 0, 10, "images", every=4, say=said.append, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] += 2.0  # two seconds a step, 64 images a step
        progress.step(step, 1.0 / step, 64)
    assert [line.split(":")[0] for line in said] == [
        f"[train_vision] step {s}/10 ({10 * s}%)" for s in (1, 4, 8, 10)
    ]
    assert (
        said[1] == "[train_vision] step 4/10 (40%): loss 0.2500, 32.0 images/s, elapsed 0:00:08, ETA 0:00:12"
    )
    assert said[-1].endswith("ETA 0:00:00")
    progress.checkpoint(10)
    progress.evaluated(10, {"i2t_r1": 0.5})
    assert said[-2:] == [
        "[train_vision] step 10: checkpoint saved",
        "[train_vision] step 10: held-out i2t_r1 0.5000",
    ]


def test_a_resumed_run_counts_its_eta_from_the_steps_it_ran():
    said, now = [], [0.0]
    progress = StepProgress(
        "finetune_text", 50, 100, "pairs", every=25, say=said.append, clock=lambda: now[0]
    )
    now[0] = 10.0
    progress.step(51, 2.0, 16)  # the first step after the resume: 10 s for 1 step, 49 to go
    assert said == [
        "[finetune_text] step 51/100 (51%): loss 2.0000, 1.6 pairs/s, elapsed 0:00:10, ETA 0:08:10"
    ]


def test_shard_lines_by_rows_when_the_total_is_known_else_by_shards():
    said, now = [], [0.0]
    by_rows = ShardProgress("recaption", 4, "images", total_rows=400, say=said.append, clock=lambda: now[0])
    now[0] = 10.0
    by_rows.shard_done("00000", 100)
    assert (
        said[-1]
        == "[recaption] shard 00000 done: 1/4 shards, 100 images, 10.0 images/s, elapsed 0:00:10, ETA 0:00:30"
    )
    by_shards = ShardProgress("embed", 3, "captions", say=said.append, clock=lambda: now[0])
    now[0] = 20.0
    by_shards.shard_done("00007", 1000)
    assert said[-1].endswith("1/3 shards, 1,000 captions, 100.0 captions/s, elapsed 0:00:10, ETA 0:00:20")
