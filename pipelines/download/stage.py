"""Download stage: a url+caption table into webdataset shards with img2dataset.

Output layout:
  input/urls.parquet              the table img2dataset reads (validated, subset, url/caption/extra columns)
  shards/{shard:05d}.tar          webdataset shards: {key}.jpg, {key}.txt (caption), {key}.json (metadata)
  shards/{shard:05d}.parquet      img2dataset's per-row status of the shard
  shards/{shard:05d}_stats.json   img2dataset's shard stats; written last, so it is the shard's completion
                                  marker (img2dataset's incremental mode skips shards that have one)
  rejected.parquet                every row that did not become a sample, with its reason: bad_url and
                                  duplicate_url (screened out before download), img2dataset's
                                  failed_to_download / failed_to_resize, opted_out
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.config_schema import check
from ops.hashing import NOT_IN_KEY
from ops.loopback_http import LoopbackFileServer
from ops.manifest import StageCounts, count_reasons
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.url_table import read_url_table, screen_urls

SHARDS_DIR = "shards"
INPUT_TABLE = "input/urls.parquet"
# img2dataset's defaults: images whose X-Robots-Tag carries one of these are not downloaded.
OPT_OUT_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
SCENE_COLUMNS = ("scene_key", "split", "dense_caption")
# Rich scenes' extra captions (a paraphrase of the dense caption, the second language's captions), kept in
# each sample's json when the scenes have them; basic scenes (the demo) have none and add no column.
RICH_SCENE_COLUMNS = ("family", "paraphrase", "caption_l2", "dense_caption_l2")
# img2dataset writes these itself and refuses them as extra columns.
RESERVED_COLUMNS = (
    "key",
    "caption",
    "url",
    "width",
    "height",
    "original_width",
    "original_height",
    "status",
    "error_message",
    "exif",
    "md5",
    "sha256",
    "sha512",
)


@dataclasses.dataclass(frozen=True)
class UrlSource:
    """One url table of a dataset made of several (CC3M + CC12M): each keeps its own format and columns."""

    name: str  # saved in every sample's json as "source"
    url_list: str
    input_format: Literal["auto", "parquet", "csv", "tsv", "jsonl"] = "auto"
    column_names: tuple[str, ...] = ()
    url_col: str = "url"
    caption_col: str | None = "caption"
    num_samples: int | None = None  # first N rows of this table; null for all

    def __post_init__(self):
        check(self.name != "", "name", "a source name", self.name)
        check(self.url_list != "", "url_list", "a url table path", self.url_list)
        check(
            self.num_samples is None or self.num_samples > 0,
            "num_samples",
            "a positive count",
            self.num_samples,
        )
        if self.column_names:
            check(
                self.url_col in self.column_names,
                "column_names",
                f"a list naming url_col {self.url_col!r}",
                self.column_names,
            )


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    # Url table: a parquet/csv/tsv/jsonl file or folder (path or fsspec URI). Empty: serve the scenes
    # stage's images over loopback HTTP (the CPU demo).
    url_list: str = ""
    input_format: Literal["auto", "parquet", "csv", "tsv", "jsonl"] = "auto"
    column_names: tuple[str, ...] = ()  # for csv/tsv without a header row, e.g. [caption, url] for CC3M
    url_col: str = "url"
    caption_col: str | None = "caption"  # saved as {key}.txt; null for none
    extra_columns: tuple[str, ...] = ()  # saved into {key}.json, e.g. a provided recaption column
    num_samples: int | None = None  # first N rows of the table (dataset subsets); null for all
    image_size_px: int = 256  # target side, in pixels
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "border"
    encode_quality: int = 95  # JPEG quality
    samples_per_shard: int = 10_000
    processes_count: int = 1  # img2dataset worker processes (per node with distributor ray)
    thread_count: int = 64  # download threads per process
    # multiprocessing: this machine's processes; ray: img2dataset's Ray distributor, one task per shard
    # across the cluster. Not part of the key: both write the same shards.
    distributor: Literal["multiprocessing", "ray"] = dataclasses.field(
        default="multiprocessing", metadata=NOT_IN_KEY
    )
    timeout_s: int = 10  # per request
    retries: int = 0
    max_image_area_px: int | None = None  # larger images are rejected (failed_to_resize); null: no limit
    # Honour publishers' opt-out: X-Robots-Tag directives that forbid use. Empty list turns it off.
    disallowed_header_directives: tuple[str, ...] = OPT_OUT_DIRECTIVES
    user_agent_token: str | None = None  # appended to the User-Agent so sites can identify the crawler
    # Several url tables downloaded as one dataset, in this order (instead of url_list); each sample's
    # json says which it came from. extra_columns must then exist in every source.
    sources: tuple[UrlSource, ...] = ()

    def __post_init__(self):
        check(not (self.sources and self.url_list), "sources", "either sources or url_list, not both", "both")
        names = [source.name for source in self.sources]
        check(len(names) == len(set(names)), "sources", "distinct source names", names)
        if self.sources:
            check(
                "source" not in self.extra_columns,
                "extra_columns",
                "no 'source' (sources write it)",
                self.extra_columns,
            )
        check(self.url_col != "", "url_col", "a column name", self.url_col)
        check(
            self.num_samples is None or self.num_samples > 0,
            "num_samples",
            "a positive count",
            self.num_samples,
        )
        check(self.image_size_px > 0, "image_size_px", "a positive number of pixels", self.image_size_px)
        check(1 <= self.encode_quality <= 100, "encode_quality", "1..100", self.encode_quality)
        check(self.samples_per_shard > 0, "samples_per_shard", "a positive count", self.samples_per_shard)
        check(self.processes_count > 0, "processes_count", "a positive count", self.processes_count)
        check(self.thread_count > 0, "thread_count", "a positive count", self.thread_count)
        check(self.timeout_s > 0, "timeout_s", "a positive number of seconds", self.timeout_s)
        check(self.retries >= 0, "retries", "zero or more", self.retries)
        area = self.max_image_area_px
        check(area is None or area > 0, "max_image_area_px", "a positive pixel count or null", area)
        reserved = sorted(set(self.extra_columns) & set(RESERVED_COLUMNS))
        check(not reserved, "extra_columns", "no column img2dataset writes itself (rename it)", reserved)
        if self.column_names:
            check(
                self.url_col in self.column_names,
                "column_names",
                f"a list naming url_col {self.url_col!r}",
                self.column_names,
            )


def download_inputs(config: DownloadConfig) -> tuple[str, ...]:
    return () if config.url_list or config.sources else ("scenes",)


def _sources_url_table(config: DownloadConfig) -> pa.Table:
    """Every source's rows under the common names url/caption, with a source column, concatenated."""
    parts = []
    for source in config.sources:
        table = read_url_table(
            source.url_list,
            input_format=source.input_format,
            url_col=source.url_col,
            caption_col=source.caption_col,
            extra_columns=config.extra_columns,
            column_names=source.column_names,
            num_samples=source.num_samples,
        )
        captions = (
            table.column(source.caption_col) if source.caption_col else pa.nulls(table.num_rows, pa.string())
        )
        columns = {"url": table.column(source.url_col), "caption": captions}
        columns.update({c: table.column(c) for c in config.extra_columns})
        columns["source"] = pa.array([source.name] * table.num_rows, pa.string())
        parts.append(pa.table(columns))
    table = pa.concat_tables(parts)
    return table.slice(0, config.num_samples) if config.num_samples is not None else table


def _scenes_url_table(scenes: ArtifactDir, server: LoopbackFileServer, config: DownloadConfig) -> pa.Table:
    from demo.scenes.stage import read_scene_table

    table = read_scene_table(scenes)
    if config.num_samples is not None:
        table = table.slice(0, config.num_samples)
    urls = pa.array([server.url_for(p) for p in table.column("image_path").to_pylist()], pa.string())
    columns = {"url": urls, "caption": table.column("caption")}
    columns.update({"scene_key": table.column("key"), "split": table.column("split")})
    columns["dense_caption"] = table.column("dense_caption")
    if table.column("paraphrase").null_count < table.num_rows:
        columns.update({name: table.column(name) for name in RICH_SCENE_COLUMNS})
    return pa.table(columns)


def _shard_stats(artifact: ArtifactDir) -> dict[int, dict]:
    names = [n for n in artifact.list(SHARDS_DIR) if n.endswith("_stats.json")]
    return {int(n.split("_")[0]): artifact.read_json(f"{SHARDS_DIR}/{n}") for n in names}


def _collect_rejected(artifact: ArtifactDir, shard_ids: list[int]) -> pa.Table:
    """Rows img2dataset did not turn into samples, from its per-shard status parquet, with a reason."""
    parts = []
    for shard in shard_ids:
        with artifact.open(f"{SHARDS_DIR}/{shard:05d}.parquet") as handle:
            rows = pq.read_table(handle)
        failed = rows.filter(pc.not_equal(rows.column("status"), "success"))
        if failed.num_rows:
            keep = [c for c in ("key", "url", "caption", *SCENE_COLUMNS) if c in failed.column_names]
            failed = failed.select([*dict.fromkeys([*keep, "status", "error_message"])])
            parts.append(failed.append_column("shard", pa.array([shard] * failed.num_rows, pa.int32())))
    if not parts:
        return pa.table({"key": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    table = pa.concat_tables(parts, promote_options="permissive")
    reasons = [
        rejection_reason(s, m)
        for s, m in zip(table["status"].to_pylist(), table["error_message"].to_pylist())
    ]
    return table.append_column("reason", pa.array(reasons, pa.string()))


def rejection_reason(status: str, error_message: str | None) -> str:
    """img2dataset's status, with publisher opt-outs told apart from dead links."""
    if error_message and "X-Robots-Tag" in error_message:
        return "opted_out"
    return status


def run_download(config: DownloadConfig, ctx: StageContext) -> StageOutcome:
    # albumentations (an img2dataset dependency) checks for updates over the network on import.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # Imported here: img2dataset pulls in heavy dependencies.
    import sys

    from img2dataset import download

    # The module, not `img2dataset.main`: the package rebinds that name to its CLI function.
    img2dataset_main = sys.modules["img2dataset.main"]

    from pipelines.download.distributor import resilient_multiprocessing_distributor

    started = time.perf_counter()
    artifact = ctx.artifact
    done_before = set(_shard_stats(artifact))
    with contextlib.ExitStack() as stack:
        if config.url_list:
            table = read_url_table(
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
            table = _sources_url_table(config)
            url_col, caption_col, extra = "url", "caption", [*config.extra_columns, "source"]
        else:
            server = stack.enter_context(LoopbackFileServer(ctx.inputs["scenes"].uri))
            table = _scenes_url_table(ctx.inputs["scenes"], server, config)
            url_col, caption_col = "url", "caption"
            extra = [c for c in (*SCENE_COLUMNS, *RICH_SCENE_COLUMNS) if c in table.column_names]
            print(f"[download] serving {table.num_rows} scene images at {server.base_url}", flush=True)
        num_rows = table.num_rows
        table, screened_out = screen_urls(table, url_col)
        # Rewritten on every run (the loopback port changes); rows and their order never do, so shard
        # n holds the same rows on a resumed run as on the first.
        artifact.write_parquet_atomic(INPUT_TABLE, table)
        num_shards = math.ceil(table.num_rows / config.samples_per_shard)
        if done_before:
            print(
                f"[download] resuming: {len(done_before)} of {num_shards} shards already complete", flush=True
            )
        if config.distributor == "multiprocessing":
            # img2dataset's own hangs for good when a worker process dies; this one retries the shard.
            img2dataset_main.multiprocessing_distributor = resilient_multiprocessing_distributor
        download(
            url_list=artifact.child_uri(INPUT_TABLE),
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
    return summarize_download(artifact, num_rows, screened_out, num_shards, done_before, elapsed, ctx)


def summarize_download(
    artifact: ArtifactDir,
    num_rows: int,
    screened_out: pa.Table,
    num_shards: int,
    done_before: set[int],
    elapsed_s: float,
    ctx: StageContext,
) -> StageOutcome:
    """Reconcile img2dataset's shard stats with the input table (num_rows rows, of which screened_out
    never reached img2dataset), write the rejected sink, log metrics."""
    stats = _shard_stats(artifact)
    missing = sorted(set(range(num_shards)) - set(stats))
    if missing:
        raise RuntimeError(f"download: shards {missing[:10]} have no stats file; rerun to finish them")
    count = sum(s["count"] for s in stats.values())
    successes = sum(s["successes"] for s in stats.values())
    if count + screened_out.num_rows != num_rows:
        raise RuntimeError(
            f"download: shards account for {count} rows and {screened_out.num_rows} were screened out, "
            f"the url table has {num_rows}"
        )
    rejected = _collect_rejected(artifact, sorted(stats))
    if screened_out.num_rows:
        rejected = pa.concat_tables([screened_out, rejected], promote_options="permissive")
    artifact.write_parquet_atomic("rejected.parquet", rejected)
    by_reason = count_reasons(rejected.column("reason").to_pylist())

    for shard, s in sorted(stats.items()):
        ctx.log_metrics(
            {"shard_success_rate": s["successes"] / max(s["count"], 1), "shard_duration_s": s["duration"]},
            shard,
        )
    new_successes = sum(s["successes"] for shard, s in stats.items() if shard not in done_before)
    metrics = {
        "num_shards": float(num_shards),
        "num_shards_resumed": float(len(done_before)),
        "success_rate": successes / max(count, 1),
        "failed_to_download": float(sum(s["failed_to_download"] for s in stats.values())),
        "failed_to_resize": float(sum(s["failed_to_resize"] for s in stats.values())),
        "images_per_s": new_successes / max(elapsed_s, 1e-9),
    }
    counts = StageCounts(
        num_in=num_rows, num_out=successes, num_rejected=num_rows - successes, rejected_by_reason=by_reason
    )
    shards = [
        {
            "shard": shard,
            "count": s["count"],
            "successes": s["successes"],
            "failed_to_download": s["failed_to_download"],
            "failed_to_resize": s["failed_to_resize"],
            "duration_s": round(s["duration"], 3),
            "resumed": shard in done_before,
        }
        for shard, s in sorted(stats.items())
    ]
    return StageOutcome(counts=counts, metrics=metrics, details={"shards": shards})


STAGE = StageSpec(
    name="download",
    code_version="2",  # 2: urls screened (bad_url, duplicate_url) before img2dataset
    config_cls=DownloadConfig,
    inputs=("scenes",),
    run=run_download,
    description="img2dataset: url+caption table -> webdataset shards (jpg, txt, json) with per-shard stats",
    resumable=True,
    resolve_inputs=download_inputs,
)
