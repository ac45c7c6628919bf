"""Download throughput: img2dataset through the stage from a loopback server vs. the local ceiling.

    python -m bench.download_throughput [--num-images 512] [--source-px 256] [--target-px 64]

The ceiling decodes, resizes and re-encodes the same files with img2dataset's own Resizer in one
process, with no network and no shard writing: what one core can do at best. The stage row runs
run_download (img2dataset, webdataset shards, stats, rejected sink) against a loopback HTTP server with
1 and 2 processes. Both are measured in this run; ratios are stage images/s per core over the ceiling.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import tempfile
import time
from pathlib import Path

from bench.result import default_json, fit_start_and_per_item, machine, write_result

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pyarrow as pa
import pyarrow.parquet as pq

from demo import basic_scenes as scenes
from ops.artifact_dir import ArtifactDir
from ops.loopback_http import LoopbackFileServer
from ops.stage import StageContext
from pipelines.download.config import DownloadConfig
from pipelines.download.stage import run_download


def write_images(folder: Path, count: int, side_px: int) -> list[str]:
    (folder / "images").mkdir(parents=True)
    paths = []
    for i in range(count):
        scene = scenes.sample_scene(random.Random(i), f"b{i}", max_objects=4)
        buffer = io.BytesIO()
        scenes.render_scene(scene, side_px).save(buffer, format="JPEG", quality=90)
        (folder / f"images/{i:06d}.jpg").write_bytes(buffer.getvalue())
        paths.append(f"images/{i:06d}.jpg")
    return paths


def local_ceiling(folder: Path, paths: list[str], target_px: int) -> float:
    """Images/s of decode + resize + encode alone, one process."""
    from img2dataset.resizer import Resizer

    resizer = Resizer(image_size=target_px, resize_mode="border", resize_only_if_bigger=False)
    payloads = [(folder / p).read_bytes() for p in paths]
    started = time.perf_counter()
    for payload in payloads:
        _, _, _, _, _, err = resizer(io.BytesIO(payload))
        assert err is None, err
    return len(payloads) / (time.perf_counter() - started)


def stage_wall(folder: Path, paths: list[str], target_px: int, processes: int, work: Path) -> float:
    """Seconds of run_download over `paths` served on loopback, start-up included."""
    name = f"{processes}-{len(paths)}"
    with LoopbackFileServer(str(folder)) as server:
        rows = [{"url": server.url_for(p), "caption": p} for p in paths]
        pq.write_table(pa.Table.from_pylist(rows), work / f"urls-{name}.parquet")
        config = DownloadConfig(
            url_list=str(work / f"urls-{name}.parquet"),
            image_size_px=target_px,
            samples_per_shard=max(1, len(paths) // (4 * processes)),
            processes_count=processes,
            thread_count=16,
        )
        started = time.perf_counter()
        outcome = run_download(config, StageContext(ArtifactDir(str(work / f"out-{name}")), {}))
        elapsed = time.perf_counter() - started
    assert outcome.counts.num_out == len(paths), outcome.counts
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--source-px", type=int, default=256)
    parser.add_argument("--target-px", type=int, default=64)
    parser.add_argument(
        "--fit-sizes", type=int, nargs="+", default=[256, 1024, 4096], help="images per fit run"
    )
    parser.add_argument("--json", default=default_json("download_throughput"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        folder, work = Path(tmp) / "src", Path(tmp) / "work"
        work.mkdir()
        all_paths = write_images(folder, max(args.num_images, *args.fit_sizes), args.source_px)
        paths = all_paths[: args.num_images]
        ceiling = local_ceiling(folder, paths, args.target_px)
        rows = [("local decode+resize ceiling", 1, ceiling, ceiling)]
        for processes in (1, 2):
            rate = len(paths) / stage_wall(folder, paths, args.target_px, processes, work)
            rows.append((f"download stage, {processes} proc", processes, rate, rate / processes))
        # One process at several sizes: wall = start + n x per-image splits img2dataset's start-up (process
        # spawn, the table, shard files) from its steady-state cost per image.
        walls = [stage_wall(folder, all_paths[:n], args.target_px, 1, work) for n in args.fit_sizes]
    start_s, per_image_s = fit_start_and_per_item(args.fit_sizes, walls)
    fit = {
        "sizes": args.fit_sizes,
        "walls_s": [round(w, 2) for w in walls],
        "start_s": round(start_s, 2),
        "per_core": round(1 / max(per_image_s, 1e-9), 1),
    }
    result = {
        "bench": "download_throughput",
        "num_images": args.num_images,
        "source_px": args.source_px,
        "target_px": args.target_px,
        "fit": fit,
        "machine": machine(),
        "rows": [
            {
                "name": n,
                "processes": p,
                "images_per_s": round(r, 1),
                "per_core": round(c, 1),
                "per_core_over_ceiling": round(c / ceiling, 3),
            }
            for n, p, r, c in rows
        ],
    }
    write_result(args.json, result)
    print(f"\n{args.num_images} images {args.source_px}px -> {args.target_px}px on {result['machine']}")
    print(f"{'run':<32}{'images/s':>10}{'per core':>10}{'ratio':>8}")
    for n, _, r, c in rows:
        print(f"{n:<32}{r:>10.1f}{c:>10.1f}{c / ceiling:>8.3f}")
    print(
        "(the stage figures include img2dataset's start-up: process spawn, reading the table, writing shards)"
    )
    print(
        f"fit over {fit['sizes']} images, 1 process, walls {fit['walls_s']} s: start {fit['start_s']} s, "
        f"{fit['per_core']} img/s steady ({fit['per_core'] / ceiling:.3f} of the ceiling)"
    )


if __name__ == "__main__":
    main()
