"""Read and validate url+caption tables (parquet, csv, tsv, jsonl; a file or a folder of files).

Everything that can be wrong with the table is found here, before any download starts, and the error
names the file and the column.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ops.errors import BadInputError

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class UrlTableError(BadInputError):
    """The url table cannot be used; the message names the file and what is wrong."""


def detect_format(path: str) -> str:
    for suffix, fmt in _SUFFIXES.items():
        if path.lower().endswith(suffix) or path.lower().endswith(suffix + ".gz"):
            return fmt
    raise UrlTableError(f"{path}: cannot tell the format from the name; set input_format to one of {FORMATS}")


def _read_one(fs: fsspec.AbstractFileSystem, path: str, fmt: str, column_names: tuple[str, ...]) -> pa.Table:
    with fs.open(path, "rb", compression="infer") as handle:
        data = handle.read()
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt in ("csv", "tsv"):
        read_options = pa_csv.ReadOptions(column_names=list(column_names) or None)
        parse_options = pa_csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
        # Captions must stay strings even when a column happens to look numeric.
        convert = pa_csv.ConvertOptions(strings_can_be_null=False)
        return pa_csv.read_csv(io.BytesIO(data), read_options, parse_options, convert)
    return pa_json.read_json(io.BytesIO(data))


def list_table_files(uri: str, input_format: str) -> tuple[fsspec.AbstractFileSystem, list[str], str]:
    """(fs, files, format) for a file or a folder; a folder holds files of one format."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise UrlTableError(f"{uri}: url table not found")
    if fs.isdir(path):
        files = sorted(f for f in fs.find(path) if not f.rsplit("/", 1)[-1].startswith((".", "_")))
        if input_format != "auto":
            files = [f for f in files if detect_format(f) == input_format] if files else []
        if not files:
            raise UrlTableError(f"{uri}: folder holds no url table files")
    else:
        files = [path]
    fmt = input_format if input_format != "auto" else detect_format(files[0])
    return fs, files, fmt


def read_url_table(
    uri: str,
    *,
    input_format: str,
    url_col: str,
    caption_col: str | None,
    extra_columns: tuple[str, ...] = (),
    column_names: tuple[str, ...] = (),
    num_samples: int | None = None,
) -> pa.Table:
    """The table's url, caption and extra columns as strings, first num_samples rows; validated."""
    fs, files, fmt = list_table_files(uri, input_format)
    wanted = [url_col, *([caption_col] if caption_col else []), *extra_columns]
    tables = []
    rows = 0
    for path in files:
        try:
            table = _read_one(fs, path, fmt, column_names)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise UrlTableError(f"{path}: cannot read as {fmt}: {err}") from None
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise UrlTableError(
                f"{path}: no column {missing[0]!r} (set url_col/caption_col/extra_columns, or column_names "
                f"for a file without a header); its columns are: {', '.join(table.column_names)}"
            )
        table = table.select(wanted)
        tables.append(table.cast(pa.schema([(c, pa.string()) for c in wanted])))
        rows += table.num_rows
        if num_samples is not None and rows >= num_samples:
            break
    table = pa.concat_tables(tables)
    if num_samples is not None:
        table = table.slice(0, num_samples)
    if table.num_rows == 0:
        raise UrlTableError(f"{uri}: the url table has no rows")
    return table


def screen_urls(table: pa.Table, url_col: str) -> tuple[pa.Table, pa.Table]:
    """(rows to download, rows rejected before download). A url that is empty or not http(s) with a host
    is `bad_url` (file:// and the like would read the machine's own files); a url seen in an earlier row
    is `duplicate_url` (the first row keeps it). Rejected rows keep their columns plus `row` (0-based
    position in the table), `reason` and `error_message`."""
    seen: set[str] = set()
    keep, reasons, messages, rows = [], [], [], []
    for row, url in enumerate(table.column(url_col).to_pylist()):
        text = (url or "").strip()
        try:
            parts = urlsplit(text)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. an invalid IPv6 literal
            valid = False
        if not valid:
            reason, message = "bad_url", f"row {row}: {text[:200]!r} is not an http(s) url"
        elif text in seen:
            reason, message = "duplicate_url", f"row {row}: the url of an earlier row"
        else:
            seen.add(text)
            keep.append(row)
            continue
        reasons.append(reason)
        messages.append(message)
        rows.append(row)
    rejected = table.take(pa.array(rows, pa.int64()))
    rejected = rejected.append_column("row", pa.array(rows, pa.int64()))
    rejected = rejected.append_column("reason", pa.array(reasons, pa.string()))
    rejected = rejected.append_column("error_message", pa.array(messages, pa.string()))
    return table.take(pa.array(keep, pa.int64())), rejected
