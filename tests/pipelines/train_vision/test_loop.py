"""train_vision without Ray, on the demo's real shards and sidecars: the loader joins by key and resumes
at a data position, the loss falls, a resumed run takes the same next step, and the loss gathered over
two real gloo processes equals the single-process loss on the same global batch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ops.image_transforms import normalize_pixels
from ops.webdataset_io import shard_id_of
from pipelines.train_vision.config import TrainVisionConfig
from pipelines.train_vision.data import (
    ShardSpan,
    deal_training_samples,
    joined_samples,
    span_samples,
    training_batches,
)
from pipelines.train_vision.loop import (
    VisionLoopSettings,
    build_optimizer,
    restore_training_state,
    step_loss,
    train_steps,
    training_state,
)
from pipelines.train_vision.model import build_model
from pipelines.train_vision.records import DataPosition, LoaderSettings

SMALL = TrainVisionConfig(adapter_width=64, adapter_depth=2, projection_dim=32, batch_size_per_worker=8)
LOOP = VisionLoopSettings(
    learning_rate=2e-3, weight_decay=0.0, warmup_steps=2, max_steps=40, max_grad_norm=1.0
)


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


@pytest.fixture(scope="module")
def demo_data(demo_root):
    shards = sorted(str(p) for p in (_complete(demo_root, "download") / "shards").glob("*.tar"))
    embed = _complete(demo_root, "embed")
    sidecars = {shard_id_of(p): str(embed / "sidecars" / f"{shard_id_of(p)}.parquet") for p in shards}
    llm_dim = json.loads((embed / "manifest.json").read_text())["details"]["dim"]
    return shards, sidecars, llm_dim, str(_complete(demo_root, "tiny_models") / "vision")


def _loader(transform, batch_size: int = 8) -> LoaderSettings:
    return LoaderSettings(
        batch_size=batch_size, dense_ratio=0.5, shuffle_buffer=16, seed=0, split="train", transform=transform
    )


def test_loader_resumes_at_a_data_position_and_refuses_a_foreign_sidecar(demo_data, tmp_path):
    shards, sidecars, llm_dim, vision = demo_data
    _, transform = build_model(SMALL, vision, llm_dim)
    position = DataPosition()
    stream = training_batches(shards, sidecars, _loader(transform), 0, 1, position)
    first = [next(stream) for _ in range(8)]  # 48 train samples / 8: 6 per epoch, so this crosses one
    assert (position.epoch, position.batches_in_epoch) == (1, 2) and position.stream is not None
    # a position without the stream's snapshot: read from the epoch's start, five batches skipped
    resumed = training_batches(
        shards, sidecars, _loader(transform), 0, 1, DataPosition(epoch=0, batches_in_epoch=5)
    )
    for expected in first[5:]:
        pixels, features = next(resumed)
        assert torch.equal(pixels, expected[0]) and torch.equal(features, expected[1])
    assert first[0][0].shape == (8, 3, 64, 64) and first[0][1].shape == (8, llm_dim)

    table = pq.read_table(sidecars[shard_id_of(shards[0])])
    pq.write_table(table.take(list(reversed(range(table.num_rows)))), tmp_path / "reversed.parquet")
    with pytest.raises(ValueError, match=r"reversed\.parquet: row 0 is"):
        list(joined_samples(shards[0], str(tmp_path / "reversed.parquet")))


def test_decode_processes_hand_out_the_same_batches_and_positions(demo_data):
    """Decoding in processes ahead of the step changes where a batch is made, not what it holds: the
    batches and the data positions equal the in-process loader's, across an epoch and from a resume."""
    import dataclasses

    shards, sidecars, llm_dim, vision = demo_data
    _, transform = build_model(SMALL, vision, llm_dim)
    ahead = dataclasses.replace(_loader(transform), decode_processes=2, prefetch_batches=2)
    for start in (DataPosition(), DataPosition(epoch=0, batches_in_epoch=4)):
        here, there = dataclasses.replace(start), dataclasses.replace(start)
        in_process = training_batches(shards, sidecars, _loader(transform), 0, 1, here)
        in_processes = training_batches(shards, sidecars, ahead, 0, 1, there)
        for _ in range(8):
            expected, got = next(in_process), next(in_processes)
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
            assert there == here
        in_processes.close()  # stops the processes
    assert (here.epoch, here.batches_in_epoch) == (1, 6)


def test_samples_are_dealt_in_equal_ranges_so_every_worker_gets_data():
    # Shard b holds no training sample (a held-out shard): round-robin by shard would leave worker 1 idle.
    spans = deal_training_samples({"a.tar": 10, "b.tar": 0, "c.tar": 5}, world=2)
    assert spans == [[ShardSpan("a.tar", 0, 7)], [ShardSpan("a.tar", 7, 10), ShardSpan("c.tar", 0, 5)]]
    assert deal_training_samples({"only.tar": 9}, world=3) == [
        [ShardSpan("only.tar", 0, 3)],
        [ShardSpan("only.tar", 3, 6)],
        [ShardSpan("only.tar", 6, 9)],
    ]


def test_two_workers_on_the_demos_shards_get_disjoint_training_samples(demo_data):
    from pipelines.train_vision.sample_plan import plan_samples

    shards, sidecars, _, _ = demo_data
    plan = plan_samples(shards, sidecars, "train", "eval", 1024)
    counts = plan.training_counts
    assert sum(counts.values()) == 48  # the small demo's training scenes, split from the status tables
    assert len(plan.held_out_keys) == 16  # its eval scenes
    settings = _loader(None)
    keys = [
        [sample.key for span in spans for sample in span_samples(span, sidecars, settings)]
        for spans in deal_training_samples(counts, world=2)
    ]
    assert len(keys[0]) == len(keys[1]) == 24 and not set(keys[0]) & set(keys[1])


def _train(model, shards, sidecars, transform, settings, steps, start_step=0, state=None, position=None):
    optimizer, scheduler = build_optimizer(model, settings)
    if state is not None:
        start_step = restore_training_state(state, model, optimizer, scheduler)
    position = position or DataPosition()
    losses: list[float] = []
    batches = training_batches(shards, sidecars, _loader(transform), 0, 1, position)
    capped = dataclasses.replace(settings, max_steps=start_step + steps)
    done = train_steps(
        model,
        batches,
        capped,
        optimizer,
        scheduler,
        start_step,
        lambda s, m: losses.append(m["loss"]),
        torch.device("cpu"),
    )
    return losses, training_state(model, optimizer, scheduler, done, [dataclasses.asdict(position)])


def test_loss_falls_on_the_demo(demo_data):
    shards, sidecars, llm_dim, vision = demo_data
    model, transform = build_model(SMALL, vision, llm_dim)
    losses, _ = _train(model, shards, sidecars, transform, LOOP, steps=40)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


def test_resumed_run_takes_the_same_next_steps(demo_data):
    shards, sidecars, llm_dim, vision = demo_data
    settings = dataclasses.replace(LOOP, max_steps=10)
    model, transform = build_model(SMALL, vision, llm_dim)
    straight, _ = _train(model, shards, sidecars, transform, settings, steps=6)
    model, _ = build_model(SMALL, vision, llm_dim)
    first, state = _train(model, shards, sidecars, transform, settings, steps=3)
    fresh, _ = build_model(SMALL, vision, llm_dim)
    torch.manual_seed(123)  # the restored RNG state must win over whatever came before
    position = DataPosition(**state["positions"][0])
    rest, _ = _train(fresh, shards, sidecars, transform, settings, steps=3, state=state, position=position)
    assert first == pytest.approx(straight[:3], abs=1e-6)
    assert rest == pytest.approx(straight[3:], abs=1e-5)


def _gathered_worker(rank: int, world: int, store: str, inputs: dict, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = inputs["model_factory"]()
    half = inputs["pixels"].shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    loss = step_loss(model, inputs["pixels"][rows], inputs["features"][rows])
    loss.backward()
    from ops.distributed import average_gradients

    average_gradients(list(model.parameters()))
    losses = [None] * world
    dist.all_gather_object(losses, loss.item())
    if rank == 0:
        torch.save({"loss": sum(losses) / world, "grad": model.text_adapter.output.weight.grad.clone()}, out)
    dist.destroy_process_group()


class _ModelFactory:
    """Picklable: rebuilds the same model in each spawned process."""

    def __init__(self, vision: str, llm_dim: int):
        self.vision, self.llm_dim = vision, llm_dim

    def __call__(self):
        return build_model(SMALL, self.vision, self.llm_dim)[0]


def test_gathered_loss_on_two_processes_equals_the_single_process_loss(demo_data, tmp_path):
    shards, sidecars, llm_dim, vision = demo_data
    factory = _ModelFactory(vision, llm_dim)
    _, transform = build_model(SMALL, vision, llm_dim)
    pixels, features = next(training_batches(shards, sidecars, _loader(transform, 16), 0, 1, DataPosition()))
    pixels = normalize_pixels(pixels, transform.mean, transform.std)  # as train_steps does on its device
    inputs = {"model_factory": factory, "pixels": pixels, "features": features}
    mp.spawn(_gathered_worker, args=(2, str(tmp_path / "store"), inputs, str(tmp_path / "out.pt")), nprocs=2)
    gathered = torch.load(tmp_path / "out.pt", weights_only=True)

    model = factory()
    single = step_loss(model, pixels, features)
    single.backward()
    assert gathered["loss"] == pytest.approx(single.item(), abs=1e-5)
    assert torch.allclose(gathered["grad"], model.text_adapter.output.weight.grad, atol=1e-6)


def test_held_out_set_holds_the_demos_eval_scenes_with_both_captions(demo_data):
    from pipelines.train_vision.held_out import held_out_set
    from pipelines.train_vision.sample_plan import plan_samples

    shards, sidecars, llm_dim, vision = demo_data
    _, transform = build_model(SMALL, vision, llm_dim)
    plan = plan_samples(shards, sidecars, "train", "eval", 5)
    held_out = held_out_set(plan.held_out, sidecars, transform)
    assert {f: tuple(t.shape) for f, (p, t) in held_out.arrays.items()} == {
        "dense": (5, llm_dim),
        "original": (5, llm_dim),
    }
    assert torch.equal(held_out.arrays["dense"][0], held_out.arrays["original"][0])  # same images


def test_too_few_training_samples_for_the_workers_fail_before_training_naming_the_fields():
    from ops.errors import BadInputError
    from pipelines.train_vision.stage import check_every_worker_has_a_batch

    config = TrainVisionConfig(num_workers=2, batch_size_per_worker=12)
    check_every_worker_has_a_batch({"a.tar": 20, "b.tar": 4}, config)  # 12 each: one batch
    with pytest.raises(BadInputError, match=r"23 training samples in 2 shards give each of num_workers=2 "):
        check_every_worker_has_a_batch({"a.tar": 20, "b.tar": 3}, config)


def test_the_official_adapter_shape_builds_and_must_match_the_llm_width(tmp_path):
    from models.tiny_factory import build_tiny_vision_tower
    from models.tiny_specs import TinyVisionSpec
    from ops.errors import BadInputError
    from pipelines.train_vision.model import build_model
    from pipelines.train_vision.stage import check_adapter_fits

    official = TrainVisionConfig(
        adapter_width=16, adapter_expansion=2, adapter_input_projection=False, adapter_output_bias=True
    )
    check_adapter_fits(official, llm_dim=16)
    with pytest.raises(BadInputError, match=r"adapter_width \(16\) must equal .* width \(32"):
        check_adapter_fits(official, llm_dim=32)
    check_adapter_fits(TrainVisionConfig(adapter_width=16), llm_dim=32)  # an input projection bridges them

    tower, _ = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    tower.save_pretrained(tmp_path, safe_serialization=True)
    model, _ = build_model(
        dataclasses.replace(official, adapter_depth=2, projection_dim=8), str(tmp_path), 16
    )
    adapter = dict(model.text_adapter.named_parameters())
    assert "input.weight" not in adapter and adapter["output.bias"].shape == (8,)
    assert adapter["blocks.0.mlp.0.weight"].shape == (32, 16)  # expansion 2 at the LLM's width
