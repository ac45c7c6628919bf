"""One piece of a stage on one synthetic dataset, in a process of its own, so its peak RSS is its own:
`python bench/scale_pieces.py <piece> <work folder> <size>` prints one JSON line.

Run by path, not as a module, so that bench/scale.py can run it against an older checkout (its `ops` and
`pipelines` first on PYTHONPATH) for the before/after table: each piece uses the streaming API where the
checkout has it and the whole-table one where it does not, and says which it ran.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

WORKER_STEPS, WORKER_BATCH = 200, 64  # finetune_text: the steps a worker runs, whatever the pair count
VISION_BATCH, VISION_BUFFER, VISION_BATCHES = 64, 1000, 100


def url_screen(work: Path, size: int) -> dict:
    from ops.artifact_dir import ArtifactDir

    table_uri = str(work / f"urls-{size}.parquet")
    out = ArtifactDir(tempfile.mkdtemp(prefix="scale-download-", dir=work))
    options = {"input_format": "auto", "url_col": "url", "caption_col": "caption"}
    try:
        from ops.url_table import iter_url_table
        from pipelines.download.input_parts import write_input_parts
    except ImportError:  # the whole table, screened in a Python loop, written in one piece
        from ops.url_table import read_url_table, screen_urls

        table, rejected = screen_urls(read_url_table(table_uri, **options), "url")
        out.write_parquet_atomic("input/urls.parquet", table)
        return {"api": "whole table", "kept": table.num_rows, "rejected": rejected.num_rows}
    screened = write_input_parts(out, iter_url_table(table_uri, **options), "url", 10000)
    return {"api": "streamed", "kept": screened.num_kept, "rejected": screened.num_rows - screened.num_kept}


def pairs_driver(work: Path, size: int) -> dict:
    from ops.artifact_dir import ArtifactDir
    from pipelines.finetune_text.config import FinetuneTextConfig

    download = ArtifactDir(str(work / f"download-{size}"))
    out = ArtifactDir(tempfile.mkdtemp(prefix="scale-finetune-", dir=work))
    config = FinetuneTextConfig(negatives="random")
    try:
        from pipelines.finetune_text.pairs import write_pairs
    except ImportError:
        from pipelines.finetune_text.pairs import collect_pairs, training_pairs

        train, _, _ = collect_pairs(download, None, config)
        training = training_pairs(train, config.negatives, config.seed, config.negative_max_similarity)
        out.write_parquet_atomic("pairs/train.parquet", training)
        return {"api": "whole table", "pairs": training.num_rows}
    counts = write_pairs(ArtifactDir(download.child_uri("shards")), None, config, out)
    return {"api": "streamed", "pairs": counts.train_rows}


def pairs_worker(work: Path, size: int) -> dict:
    from pipelines.finetune_text.batches import pair_batches

    uri = str(work / f"pairs-{size}.parquet")
    try:
        from pipelines.finetune_text.pair_groups import PairGroups

        pairs, api = PairGroups.of_parquet(uri), "row groups"
    except ImportError:
        from pipelines.finetune_text.pairs import read_training_pairs

        pairs, api = read_training_pairs(uri), "whole table"
    batches = pair_batches(pairs, WORKER_BATCH, rank=0, world=1, seed=0)
    seen = sum(len(next(batches)["query_side"]) for _ in range(WORKER_STEPS))
    return {"api": api, "pairs_trained": seen, "groups_read": getattr(pairs, "reads", None)}


def embed_captions(work: Path, size: int, from_tars: bool) -> dict:
    import fsspec

    from ops.webdataset_io import iter_samples
    from pipelines.embed.config import EmbedConfig

    try:
        from pipelines.embed.embedder import status_table_captions
    except ImportError:  # a checkout whose embed read every caption from the tars
        from_tars = True
    fs = fsspec.filesystem("file")
    tars = sorted(str(p) for p in (work / f"vision-{size}" / "shards").glob("*.tar"))
    config = EmbedConfig(caption_fields=("original",))
    captions = 0
    for tar in tars:
        if from_tars:
            captions += sum(1 for sample in iter_samples(fs, tar) if "txt" in sample)
        else:
            keys, _ = status_table_captions(fs, tar, config, None)
            captions += len(keys)
    return {"api": "tar members" if from_tars else "status tables", "captions": captions}


def _vision(work: Path, size: int):
    from ops.image_transforms import ImageTransformConfig
    from pipelines.train_vision.records import LoaderSettings

    root = work / f"vision-{size}"
    tars = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    sidecars = {Path(t).stem: str(root / "sidecars" / f"{Path(t).stem}.parquet") for t in tars}
    settings = LoaderSettings(VISION_BATCH, 0.5, VISION_BUFFER, 0, transform=ImageTransformConfig(size_px=16))
    return tars, sidecars, settings


def vision_plan(work: Path, size: int) -> dict:
    from pipelines.train_vision.sample_plan import plan_samples

    tars, sidecars, _ = _vision(work, size)
    plan = plan_samples(tars, sidecars, None, "eval", 1000)
    return {"api": "metadata", "training": sum(plan.training_counts.values())}


def vision_loader(work: Path, size: int) -> dict:
    from pipelines.train_vision.data import training_batches
    from pipelines.train_vision.records import DataPosition

    tars, sidecars, settings = _vision(work, size)
    stream = training_batches(tars, sidecars, settings, 0, 1, DataPosition())
    images = sum(next(stream)[0].shape[0] for _ in range(VISION_BATCHES))
    return {"api": "stream", "images": images}


def vision_resume(work: Path, size: int, seek: bool) -> dict:
    """A position 90% into epoch 0; then the reads and seconds until the resumed stream's first batch."""
    from pipelines.train_vision import data
    from pipelines.train_vision.records import DataPosition

    tars, sidecars, settings = _vision(work, size)
    # Drawn, not decoded (decoding 90% of an epoch is not what is measured): the position a checkpoint
    # taken there would hold.
    index = int(0.9 * size / VISION_BATCH)
    snapshots: dict = {}
    jobs = data._batch_jobs(
        [data.ShardSpan(t) for t in tars], sidecars, settings, 0, DataPosition(), snapshots
    )
    for _ in range(index + 1):
        next(jobs)
    stream_state, carried = snapshots[(0, index)]
    saved = {"epoch": 0, "batches_in_epoch": index + 1}
    if seek:
        saved.update(stream=stream_state, carried=carried)
    reads = []
    original = data.span_samples

    def counted(*args):
        for sample in original(*args):
            reads.append(1)
            yield sample

    data.span_samples = counted
    began = time.perf_counter()
    next(data.training_batches(tars, sidecars, settings, 0, 1, DataPosition(**saved)))
    return {
        "api": "seek" if seek else "read through",
        "resume_samples_read": len(reads),
        "resume_s": round(time.perf_counter() - began, 3),
    }


PIECES = {
    "url_screen": url_screen,
    "pairs_driver": pairs_driver,
    "pairs_worker": pairs_worker,
    "embed_captions": lambda w, s: embed_captions(w, s, from_tars=False),
    "embed_captions_from_tars": lambda w, s: embed_captions(w, s, from_tars=True),
    "vision_plan": vision_plan,
    "vision_loader": vision_loader,
    "vision_resume": lambda w, s: vision_resume(w, s, seek=True),
    "vision_resume_read_through": lambda w, s: vision_resume(w, s, seek=False),
}


def _vm_hwm_kib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def main() -> None:
    piece, work, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    began = time.perf_counter()
    result = PIECES[piece](work, size)
    wall = time.perf_counter() - began
    # VmHWM, not ru_maxrss: the latter survives exec, so a child would report its parent's peak
    peak_mib = _vm_hwm_kib() / 1024
    arrow_mib = pa.default_memory_pool().max_memory() / 2**20
    print(
        json.dumps(
            {
                "piece": piece,
                "size": size,
                "wall_s": round(wall, 3),
                "peak_rss_mib": round(peak_mib, 1),
                "arrow_peak_mib": round(arrow_mib, 1),  # Arrow's own allocations: the tables held
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
