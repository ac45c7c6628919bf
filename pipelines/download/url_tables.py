"""The table img2dataset reads: every source's rows under common column names, or the demo's scenes served
over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from ops.artifact_dir import ArtifactDir
from ops.image_table import read_image_table
from ops.loopback_http import LoopbackFileServer
from ops.url_table import iter_url_table
from pipelines.download.config import RICH_SCENE_COLUMNS, DownloadConfig


def sources_url_batches(config: DownloadConfig) -> Iterator[pa.Table]:
    """Every source's rows under the common names url/caption, with a source column, one batch at a time,
    the first config.num_samples rows of them all."""
    rows = 0
    for source in config.sources:
        batches = iter_url_table(
            source.url_list,
            input_format=source.input_format,
            url_col=source.url_col,
            caption_col=source.caption_col,
            extra_columns=config.extra_columns,
            column_names=source.column_names,
            num_samples=source.num_samples,
        )
        for table in batches:
            if config.num_samples is not None:
                table = table.slice(0, config.num_samples - rows)
            captions = (
                table.column(source.caption_col)
                if source.caption_col
                else pa.nulls(table.num_rows, pa.string())
            )
            columns = {"url": table.column(source.url_col), "caption": captions}
            columns.update({c: table.column(c) for c in config.extra_columns})
            columns["source"] = pa.array([source.name] * table.num_rows, pa.string())
            rows += table.num_rows
            yield pa.table(columns)
            if config.num_samples is not None and rows >= config.num_samples:
                return


def scenes_url_table(scenes: ArtifactDir, server: LoopbackFileServer, config: DownloadConfig) -> pa.Table:
    table = read_image_table(scenes)
    if config.num_samples is not None:
        table = table.slice(0, config.num_samples)
    urls = pa.array([server.url_for(p) for p in table.column("image_path").to_pylist()], pa.string())
    columns = {"url": urls, "caption": table.column("caption")}
    columns.update({"scene_key": table.column("key"), "split": table.column("split")})
    columns["dense_caption"] = table.column("dense_caption")
    if table.column("paraphrase").null_count < table.num_rows:
        columns.update({name: table.column(name) for name in RICH_SCENE_COLUMNS})
    return pa.table(columns)
