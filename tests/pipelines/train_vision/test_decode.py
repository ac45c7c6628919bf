"""decode_ahead: batches collated in spawned processes come back in the jobs' order, and an error in a
process is raised at the batch it belongs to."""

from __future__ import annotations

import pytest

from pipelines.train_vision.decode import decode_ahead


def square_or_fail(chunk: int, settings: dict, seed: str) -> int:
    if chunk == settings["bad"]:
        raise ValueError(f"batch {seed}: bad image")
    return chunk * chunk


def test_batches_come_back_in_order_and_errors_at_their_batch():
    jobs = ((0, index, index, f"s{index}") for index in range(7))
    got = list(decode_ahead(jobs, square_or_fail, {"bad": -1}, processes=2, prefetch_batches=2))
    assert got == [(0, i, i * i) for i in range(7)]

    jobs = ((0, index, index, f"s{index}") for index in range(7))
    stream = decode_ahead(jobs, square_or_fail, {"bad": 3}, processes=2, prefetch_batches=1)
    assert [next(stream)[2] for _ in range(3)] == [0, 1, 4]
    with pytest.raises(ValueError, match="batch s3: bad image"):
        next(stream)


def test_the_paper_recipe_reserves_its_decode_processes_cores():
    from pathlib import Path

    from pipelines.ray_train import scaling_config
    from pipelines.train_vision.worker import cpus_per_worker
    from workflows.recipe import load_recipe
    from workflows.registry import CHAIN

    recipe = load_recipe(Path(__file__).parents[3] / "configs/recap_datacomp_30m.yaml", CHAIN)
    vision = recipe.stages["train_vision"]
    assert vision.decode_processes == 3  # 2.8 cores of decoding per H100 (bench/README.md)
    scaling = scaling_config(vision, cpus_per_worker(vision))
    assert scaling.resources_per_worker == {"CPU": 4.0, "GPU": 1}
