"""How cost grows: the embed stage and vision training at two input sizes and on 1 and 2 workers.

- embed: the embed stage (Ray Data actors) over 2 and over 8 shards of 512 samples (2 captions each),
  with 1 and with 2 encoder actors sharing the machine's cores.
- vision: the LLM2CLIP training step (tiny CLIP ViT + adapter, precomputed features, CLIP loss with
  features gathered across workers) at 16 and 32 images per worker, in 1 process and in 2 gloo
  processes, each with half the cores. Images/s counts every worker's images.

On a 2-core machine a second worker only splits the same cores: the 2-worker rows show the cost of the
split (communication, smaller per-process matmuls), not a speed-up. Run it where there are more cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from bench.result import default_json, machine, write_result


def embed_rows(shard_counts: tuple[int, ...], per_shard: int, batch_size: int) -> list[dict]:
    import ray

    from bench.embed_throughput import build_inputs, run_stage

    rows = []
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    try:
        for shards in shard_counts:
            with tempfile.TemporaryDirectory(prefix="bench-scaling-embed-") as tmp:
                encoder_dir, shard_dir, captions = build_inputs(Path(tmp), shards, per_shard)
                for actors in (1, 2):
                    result = run_stage(encoder_dir, shard_dir, Path(tmp), batch_size, True, num_actors=actors)
                    rows.append(
                        {
                            "part": "embed stage",
                            "size": len(captions),
                            "size_label": f"{len(captions)} captions",
                            "workers": actors,
                            "seconds": round(result["wall_s"], 2),
                            "per_s": round(len(captions) / result["wall_s"], 1),
                            "unit": "captions/s",
                        }
                    )
    finally:
        ray.shutdown()
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _vision_worker(rank: int, world: int, port: int, batch: int, steps: int, threads: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
    from models.tiny_factory import build_tiny_vision_tower
    from models.tiny_specs import TinyVisionSpec
    from pipelines.train_vision.loop import VisionLoopSettings, build_optimizer, train_steps

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    tower, _ = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    torch.manual_seed(0)
    model = LLM2CLIPModel.with_vision_tower(
        LLM2CLIPConfig(llm_dim=128, adapter_width=128, adapter_depth=2, projection_dim=64), tower
    )
    generator = torch.Generator().manual_seed(rank)
    batches = [
        (torch.randn(batch, 3, 64, 64, generator=generator), torch.randn(batch, 128, generator=generator))
        for _ in range(4)
    ]
    settings = VisionLoopSettings(1e-3, 0.0, 0, steps + 2, 1.0)
    optimizer, scheduler = build_optimizer(model, settings)
    marks: list[float] = []

    def on_step(step: int, _metrics) -> None:
        if step in (2, steps + 2):  # two warm-up steps, then `steps` timed ones
            marks.append(time.perf_counter())

    train_steps(
        model,
        (batches[i % 4] for i in range(steps + 2)),
        settings,
        optimizer,
        scheduler,
        0,
        on_step,
        torch.device("cpu"),
    )
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds": marks[1] - marks[0]}))
    if world > 1:
        dist.destroy_process_group()


def vision_rows(batch_sizes: tuple[int, ...], steps: int) -> list[dict]:
    import torch.multiprocessing as mp

    cores = os.cpu_count() or 2
    rows = []
    for batch in batch_sizes:
        for world in (1, 2):
            with tempfile.TemporaryDirectory(prefix="bench-scaling-vision-") as tmp:
                out = str(Path(tmp) / "time.json")
                args = (world, _free_port(), batch, steps, max(1, cores // world), out)
                mp.spawn(_vision_worker, args=args, nprocs=world, join=True)
                seconds = json.loads(Path(out).read_text())["seconds"]
            rows.append(
                {
                    "part": "vision step",
                    "size": batch,
                    "size_label": f"{batch} images/worker",
                    "workers": world,
                    "seconds": round(seconds, 3),
                    "per_s": round(steps * batch * world / seconds, 1),
                    "unit": "img/s",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-shards", type=int, nargs=2, default=(2, 8), help="the two input sizes")
    parser.add_argument("--per-shard", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64, help="captions per embed forward")
    parser.add_argument("--vision-batches", type=int, nargs=2, default=(16, 32), help="images per worker")
    parser.add_argument("--vision-steps", type=int, default=20)
    parser.add_argument("--json", default=default_json("scaling"))
    args = parser.parse_args()
    rows = embed_rows(tuple(args.embed_shards), args.per_shard, args.batch_size)
    rows += vision_rows(tuple(args.vision_batches), args.vision_steps)
    result = {
        "bench": "scaling",
        "machine": machine(),
        "rows": rows,
    }
    write_result(args.json, result)
    print(f"\nscaling on {result['machine']}")
    print(f"{'part':<14}{'size':<22}{'workers':>8}{'seconds':>9}{'rate':>10}  unit")
    for r in rows:
        line = f"{r['part']:<14}{r['size_label']:<22}{r['workers']:>8}{r['seconds']:>9}{r['per_s']:>10}"
        print(f"{line}  {r['unit']}")


if __name__ == "__main__":
    main()
