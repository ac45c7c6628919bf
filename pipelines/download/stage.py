"""Download stage: a url+caption table into webdataset shards with img2dataset, or (download.shards) a
user's existing webdataset tars ingested into the same layout (ingest.py).

Output layout:
  input/part-{n:05d}.parquet      the table img2dataset reads (validated, screened, subset, url/caption/extra
                                  columns), in parts of whole shards so no process reads it all at once
  screened_out.parquet            the rows screened out before download (bad_url, duplicate_url)
  shards/{shard:05d}.tar          webdataset shards: {key}.jpg, {key}.txt (caption), {key}.json (metadata),
                                  in key order (not the order the downloads finished in)
  shards/{shard:05d}.parquet      img2dataset's per-row status of the shard, in key order
  shards/{shard:05d}_stats.json   img2dataset's shard stats; written last, so it is the shard's completion
                                  marker (img2dataset's incremental mode skips shards that have one)
  rejected.parquet                every row that did not become a sample, with its reason: bad_url and
                                  duplicate_url (screened out before download), img2dataset's
                                  failed_to_download / failed_to_resize, opted_out
"""

from __future__ import annotations

import contextlib
import math
import os
import time

from ops.loopback_http import LoopbackFileServer
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.url_table import iter_url_table
from pipelines.download.config import (
    INPUT_DIR,
    RICH_SCENE_COLUMNS,
    SCENE_COLUMNS,
    SHARDS_DIR,
    DownloadConfig,
    download_inputs,
)
from pipelines.download.input_parts import write_input_parts
from pipelines.download.results import (
    discard_partial_stats,
    shard_stats,
    summarize_download,
    summarize_ingest,
)
from pipelines.download.url_tables import scenes_url_table, sources_url_batches


def with_caption_tables(config: DownloadConfig, outcome: StageOutcome, ctx: StageContext) -> StageOutcome:
    """download.caption_tables joined onto the finished shards (a Ray task when Ray is up); counted."""
    if not config.caption_tables:
        return outcome
    import ray

    from pipelines.download.caption_tables import join_caption_tables

    if ray.is_initialized():
        task = ray.remote(join_caption_tables).options(num_cpus=1, max_retries=0)
        counts = ray.get(task.remote(config.caption_tables, ctx.artifact))
    else:
        counts = join_caption_tables(config.caption_tables, ctx.artifact)
    for name, numbers in counts.items():
        outcome.metrics.update({f"caption_table_{name}_{k}": float(v) for k, v in numbers.items()})
    outcome.details["caption_tables"] = counts
    return outcome


def run_ingest(config: DownloadConfig, ctx: StageContext) -> StageOutcome:
    """download.shards: the user's tars validated and re-sharded (ingest.py), in a Ray task holding
    processes_count CPUs (its checking threads) when Ray is up, else in this process."""
    import ray

    from pipelines.download.ingest_run import ingest

    started = time.perf_counter()
    if ray.is_initialized():
        task = ray.remote(ingest).options(num_cpus=config.processes_count, max_retries=0)
        ray.get(task.remote(config, ctx.artifact.uri))
    else:
        ingest(config, ctx.artifact.uri)
    return with_caption_tables(
        config, summarize_ingest(ctx.artifact, time.perf_counter() - started, ctx), ctx
    )


def run_download(config: DownloadConfig, ctx: StageContext) -> StageOutcome:
    # albumentations (an img2dataset dependency) checks for updates over the network on import.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if config.shards or config.image_folder:
        return run_ingest(config, ctx)
    # Imported here: img2dataset pulls in heavy dependencies.
    import sys

    from img2dataset import download

    # The module, not `img2dataset.main`: the package rebinds that name to its CLI function.
    img2dataset_main = sys.modules["img2dataset.main"]

    from pipelines.download.distributor import resilient_multiprocessing_distributor
    from pipelines.download.sorted_writer import KeySortedShardWriter

    started = time.perf_counter()
    artifact = ctx.artifact
    redone = discard_partial_stats(artifact)
    if redone:
        print(f"[download] shards {redone} have half-written stats (a killed run): redoing them", flush=True)
    done_before = set(shard_stats(artifact))
    with contextlib.ExitStack() as stack:
        if config.url_list:
            batches = iter_url_table(
                config.url_list,
                input_format=config.input_format,
                url_col=config.url_col,
                caption_col=config.caption_col,
                extra_columns=config.extra_columns,
                column_names=config.column_names,
                num_samples=config.num_samples,
            )
            url_col, caption_col, extra = config.url_col, config.caption_col, list(config.extra_columns)
        elif config.sources:
            batches = sources_url_batches(config)
            url_col, caption_col, extra = "url", "caption", [*config.extra_columns, "source"]
        else:
            server = stack.enter_context(LoopbackFileServer(ctx.inputs["scenes"].uri))
            table = scenes_url_table(ctx.inputs["scenes"], server, config)
            batches = iter([table])
            url_col, caption_col = "url", "caption"
            extra = [c for c in (*SCENE_COLUMNS, *RICH_SCENE_COLUMNS) if c in table.column_names]
            print(f"[download] serving {table.num_rows} scene images at {server.base_url}", flush=True)
        # Rewritten on every run (the loopback port changes); rows and their order never do, so shard
        # n holds the same rows on a resumed run as on the first.
        screened = write_input_parts(artifact, batches, url_col, config.samples_per_shard)
        num_rows, num_kept = screened.num_rows, screened.num_kept
        num_shards = math.ceil(num_kept / config.samples_per_shard)
        if done_before:
            print(
                f"[download] resuming: {len(done_before)} of {num_shards} shards already complete", flush=True
            )
        # Each shard in key order, whatever order its download threads finished in (sorted_writer.py).
        img2dataset_main.WebDatasetSampleWriter = KeySortedShardWriter
        if config.distributor == "multiprocessing":
            # img2dataset's own hangs for good when a worker process dies; this one retries the shard.
            img2dataset_main.multiprocessing_distributor = resilient_multiprocessing_distributor
        download(
            url_list=artifact.child_uri(INPUT_DIR),
            input_format="parquet",
            url_col=url_col,
            caption_col=caption_col,
            save_additional_columns=extra or None,
            output_folder=artifact.child_uri(SHARDS_DIR),
            output_format="webdataset",
            image_size=config.image_size_px,
            resize_mode=config.resize_mode,
            encode_quality=config.encode_quality,
            encode_format="jpg",
            number_sample_per_shard=config.samples_per_shard,
            processes_count=config.processes_count,
            thread_count=config.thread_count,
            distributor=config.distributor,
            timeout=config.timeout_s,
            retries=config.retries,
            max_image_area=float(config.max_image_area_px or "inf"),
            disallowed_header_directives=list(config.disallowed_header_directives),
            user_agent_token=config.user_agent_token,
            incremental_mode="incremental",
            enable_wandb=False,
        )
    elapsed = time.perf_counter() - started
    outcome = summarize_download(artifact, num_rows, num_shards, done_before, elapsed, ctx)
    return with_caption_tables(config, outcome, ctx)


STAGE = StageSpec(
    name="download",
    # 2: urls screened (bad_url, duplicate_url) before img2dataset; 3: shards written in key order;
    # 4: the input table streamed into parts (img2dataset's shards are cut per part)
    code_version="4",
    config_cls=DownloadConfig,
    inputs=("scenes",),
    run=run_download,
    description="img2dataset: url+caption table -> webdataset shards (jpg, txt, json) with per-shard stats",
    resumable=True,
    resolve_inputs=download_inputs,
)
