"""download's settings: the url tables (one, or several sources), the img2dataset options and what a row must
have, as the recipe's `download:` section holds them."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ops.config_schema import check
from ops.hashing import IN_KEY_WHEN_SET, NOT_IN_KEY

SHARDS_DIR = "shards"
INPUT_DIR = "input"  # img2dataset's url_list: part-*.parquet, each a whole number of shards
SCREENED_OUT = "screened_out.parquet"  # outside input/, whose every parquet file img2dataset reads
# img2dataset's defaults: images whose X-Robots-Tag carries one of these are not downloaded.
OPT_OUT_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
SCENE_COLUMNS = ("scene_key", "split", "dense_caption")
# Rich scenes' extra captions (a paraphrase of the dense caption, the second language's captions, the
# synonym caption), kept in each sample's json when the scenes have them; basic scenes (the demo) have
# none and add no column.
RICH_SCENE_COLUMNS = ("family", "paraphrase", "caption_l2", "dense_caption_l2", "dense_caption_syn")
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
class CaptionTable:
    """Captions made elsewhere, joined onto the samples (pipelines/download/caption_tables.py)."""

    name: str
    path: str  # csv / tsv / parquet / jsonl file or folder (path or fsspec URI)
    join_on: Literal["url", "key"] = "url"  # the sample's url, or its key (the user's key when ingested)
    join_col: str = "url"  # the table's column holding that url or key
    # table column -> the sample field it becomes (a status-table column), e.g. DreamLIP's
    # {longIB_captions: dense_caption, shortIB_captions: short_dense_caption}, Recap-DataComp's
    # {re_caption: dense_caption}
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    input_format: Literal["auto", "parquet", "csv", "tsv", "jsonl"] = "auto"

    def __post_init__(self):
        check(bool(self.name), "name", "a name", self.name)
        check(bool(self.fields), "fields", "a mapping of table columns to sample fields", self.fields)
        taken = sorted(set(self.fields.values()) & {"key", "status", "url", "caption", "source_key"})
        check(not taken, "fields", "sample fields other than key, status, url, caption, source_key", taken)


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
    # img2dataset worker processes (per node with distributor ray) and download threads per process: not in
    # the key, since every shard is written in key order whichever thread finishes first
    processes_count: int = dataclasses.field(default=1, metadata=NOT_IN_KEY)
    thread_count: int = dataclasses.field(default=64, metadata=NOT_IN_KEY)
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
    # Existing webdataset tars (a folder, a glob or one file; path or fsspec URI) ingested instead of
    # downloading: validated, re-sharded to samples_per_shard, resized only if resize_mode is not "no"
    # (pipelines/download/ingest.py). extra_columns then names json / parquet fields to keep.
    shards: str = ""
    # A folder of images (path or URI; files grouped by name up to the first dot, so cat.jpg + cat.txt
    # is one sample), ingested as shards are; captions from .txt/.json beside them or from `captions`,
    # a csv/tsv/parquet/jsonl table whose captions_file_col holds each image's path below the folder.
    image_folder: str = ""
    captions: str = ""
    captions_file_col: str = "file_name"
    # Provided captions (DreamLIP's, Recap-DataComp's) joined onto the samples by url or key, as fields of
    # each shard's status table: a recipe can then skip recaption. Counted per table in the manifest.
    caption_tables: tuple[CaptionTable, ...] = dataclasses.field(default=(), metadata=IN_KEY_WHEN_SET)

    def __post_init__(self):
        given = [name for name in ("url_list", "sources", "shards", "image_folder") if getattr(self, name)]
        check(
            len(given) <= 1,
            given[-1] if given else "url_list",
            "one of url_list, sources, shards, image_folder",
            given,
        )
        check(
            not self.captions or bool(self.image_folder), "captions", "used with image_folder", self.captions
        )
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
    return () if config.url_list or config.sources or config.shards or config.image_folder else ("scenes",)
