"""Read and validate url+caption tables (parquet, csv, tsv, jsonl; a file or a folder of files).

Everything that can be wrong with the table is found here, before any download starts, and the error
names the file and the column.
"""

from __future__ import annotations

import csv as _csv
from collections.abc import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ops.errors import BadInputError
from ops.text_digests import digests as text_digests

FORMATS = ("parquet", "csv", "tsv", "jsonl")
BATCH_ROWS = 8192  # rows read, screened and written at a time
# An http(s) url with a host (a name, or an IPv6 literal in brackets), as urllib.parse.urlsplit would
# find one; RE2 syntax, for pyarrow compute.
HTTP_URL = r"^(?i:https?)://(?:[^/?#@]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]\s]+)(?::[0-9]*)?(?:[/?#]|$)"
_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class UrlTableError(BadInputError):
    """The url table cannot be used; the message names the file and what is wrong."""


def detect_format(path: str) -> str:
    for suffix, fmt in _SUFFIXES.items():
        if path.lower().endswith(suffix) or path.lower().endswith(suffix + ".gz"):
            return fmt
    raise UrlTableError(f"{path}: cannot tell the format from the name; set input_format to one of {FORMATS}")


def _batches_of_file(
    fs: fsspec.AbstractFileSystem, path: str, fmt: str, column_names: tuple[str, ...], batch_rows: int
) -> Iterator[pa.Table]:
    """The file's rows in tables of about batch_rows (parquet: row batches; csv/tsv/jsonl: the streaming
    readers' blocks, merged up to batch_rows); never the whole file at once."""
    with fs.open(path, "rb", compression="infer") as handle:
        if fmt == "parquet":
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=batch_rows):
                yield pa.Table.from_batches([batch])
            return
        if fmt in ("csv", "tsv"):
            read_options = pa_csv.ReadOptions(column_names=list(column_names) or None, block_size=1 << 24)
            parse_options = pa_csv.ParseOptions(
                delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True
            )
            # Captions must stay strings even when a column happens to look numeric: every column is
            # read as a string (type inference per block could also disagree between blocks).
            reader = pa_csv.open_csv(
                handle, read_options, parse_options, _all_strings(handle, fmt, read_options)
            )
        else:
            reader = pa_json.open_json(handle, pa_json.ReadOptions(block_size=1 << 24))
        pending, rows = [], 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= batch_rows:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
        if pending:
            yield pa.Table.from_batches(pending)


def _all_strings(handle, fmt: str, read_options: pa_csv.ReadOptions) -> pa_csv.ConvertOptions:
    """ConvertOptions reading every column as a (non-null) string; the header is peeked and the handle
    rewound."""
    names = read_options.column_names
    if not names:
        first = handle.readline().decode("utf-8-sig").rstrip("\r\n")
        handle.seek(0)
        names = next(_csv.reader([first], delimiter="\t" if fmt == "tsv" else ","))
    return pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False)


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


def iter_url_table(
    uri: str,
    *,
    input_format: str,
    url_col: str,
    caption_col: str | None,
    extra_columns: tuple[str, ...] = (),
    column_names: tuple[str, ...] = (),
    num_samples: int | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.Table]:
    """The table's url, caption and extra columns as strings, first num_samples rows, in tables of about
    batch_rows, one input file at a time (memory holds one batch); validated."""
    fs, files, fmt = list_table_files(uri, input_format)
    wanted = [url_col, *([caption_col] if caption_col else []), *extra_columns]
    schema = pa.schema([(c, pa.string()) for c in wanted])
    rows = 0
    for path in files:
        try:
            for table in _batches_of_file(fs, path, fmt, column_names, batch_rows):
                missing = [c for c in wanted if c not in table.column_names]
                if missing:
                    raise UrlTableError(
                        f"{path}: no column {missing[0]!r} (set url_col/caption_col/extra_columns, or "
                        "column_names for a file without a header); its columns are: "
                        f"{', '.join(table.column_names)}"
                    )
                if num_samples is not None:
                    table = table.slice(0, num_samples - rows)
                rows += table.num_rows
                yield table.select(wanted).cast(schema)
                if num_samples is not None and rows >= num_samples:
                    return
        except (pa.ArrowException, OSError, ValueError) as err:
            if isinstance(err, UrlTableError):
                raise
            raise UrlTableError(f"{path}: cannot read as {fmt}: {err}") from None
    if rows == 0:
        raise UrlTableError(f"{uri}: the url table has no rows")


def read_url_table(uri: str, **options) -> pa.Table:
    """The whole table (iter_url_table's batches concatenated): for small tables and tests."""
    return pa.concat_tables(iter_url_table(uri, **options))


class UrlScreen:
    """Rows to download and rows rejected before download, batch by batch. A url that is empty or not
    http(s) with a host is `bad_url` (file:// and the like would read the machine's own files); a url
    seen in an earlier row, of this batch or any before, is `duplicate_url` (the first row keeps it).
    Rejected rows keep their columns plus `row` (0-based position in the whole table), `reason` and
    `error_message`.

    The check is pyarrow compute; what it remembers of earlier batches is an 8-byte digest per distinct
    url (240 MB at 30M rows; two different urls share a digest with probability ~1e-5 at that size)."""

    def __init__(self, url_col: str):
        self.url_col = url_col
        # Digests of the urls kept so far, as sorted runs merged when a run is no larger than the one
        # after it (a binary counter): adding n urls costs O(n log n) however the batches fall.
        self.runs: list[np.ndarray] = []
        self.rows = 0  # rows screened so far: the next batch's first row number

    def screen(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        first_row, self.rows = self.rows, self.rows + table.num_rows
        urls = pc.utf8_trim_whitespace(pc.fill_null(table.column(self.url_col), ""))
        valid = pc.fill_null(pc.match_substring_regex(urls, HTTP_URL), False).to_numpy(zero_copy_only=False)
        digests = np.zeros(table.num_rows, dtype=np.uint64)
        valid_rows = np.flatnonzero(valid)
        digests[valid_rows] = text_digests(pc.take(urls, pa.array(valid_rows)).to_pylist())
        duplicate = np.zeros(table.num_rows, dtype=bool)
        if len(valid_rows):
            _, first = np.unique(digests[valid_rows], return_index=True)
            repeated = np.ones(len(valid_rows), dtype=bool)
            repeated[first] = False  # a url's first row in this batch keeps it...
            earlier = self._seen_before(digests[valid_rows])
            duplicate[valid_rows] = repeated | earlier  # ...unless an earlier batch had it
            self._remember(np.unique(digests[valid_rows]))
        keep = valid & ~duplicate
        rejected_rows = np.flatnonzero(~keep)
        texts = pc.take(urls, pa.array(rejected_rows, pa.int64())).to_pylist()
        reasons, messages = [], []
        for row, text in zip(rejected_rows.tolist(), texts):
            if not valid[row]:
                reasons.append("bad_url")
                messages.append(f"row {first_row + row}: {text[:200]!r} is not an http(s) url")
            else:
                reasons.append("duplicate_url")
                messages.append(f"row {first_row + row}: the url of an earlier row")
        rejected = table.take(pa.array(rejected_rows, pa.int64()))
        rejected = rejected.append_column("row", pa.array(rejected_rows + first_row, pa.int64()))
        rejected = rejected.append_column("reason", pa.array(reasons, pa.string()))
        rejected = rejected.append_column("error_message", pa.array(messages, pa.string()))
        return table.filter(pa.array(keep)), rejected

    def _seen_before(self, digests: np.ndarray) -> np.ndarray:
        found = np.zeros(len(digests), dtype=bool)
        for run in self.runs:
            position = np.minimum(np.searchsorted(run, digests), len(run) - 1)
            found |= run[position] == digests
        return found

    def _remember(self, digests: np.ndarray) -> None:
        self.runs.append(digests)
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.union1d(self.runs[-1], last)


def screen_urls(table: pa.Table, url_col: str) -> tuple[pa.Table, pa.Table]:
    """A whole table screened at once (UrlScreen): for small tables and tests."""
    return UrlScreen(url_col).screen(table)
