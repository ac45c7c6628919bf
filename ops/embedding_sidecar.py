"""Embedding sidecars: one parquet per image shard, rows 1:1 with the shard's keys in tar order.

Columns: key, then per caption field `{field}` (fixed-size list of float16 or float32; zeros where the
sample has no such caption), `{field}_present` (false there) and `{field}_truncated` (the caption was
longer than the encoder's max length). Absence is a column, not a null list entry: pyarrow cannot read
back null entries of a fixed-size list from parquet.

Also the reference LLM2CLIP layout: `{shard}_text_embeddings.tar` whose members are `{key}.{name}`
holding float32 bytes, in the image shard's key order.
"""

from __future__ import annotations

import io
import tarfile

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ops.errors import BadInputError

ARROW_FLOATS = {"float16": pa.float16(), "float32": pa.float32()}


def embedding_column(vectors: list[np.ndarray | None], dim: int, dtype: str) -> pa.FixedSizeListArray:
    """Rows of `dim` floats, zeros where a vector is None."""
    if dtype not in ARROW_FLOATS:
        raise ValueError(f"sidecar dtype must be one of {sorted(ARROW_FLOATS)}, got {dtype!r}")
    numpy_dtype = np.float16 if dtype == "float16" else np.float32
    flat = np.zeros((len(vectors), dim), dtype=numpy_dtype)
    for row, vector in enumerate(vectors):
        if vector is not None:
            flat[row] = vector
    values = pa.array(flat.reshape(-1), type=ARROW_FLOATS[dtype])
    return pa.FixedSizeListArray.from_arrays(values, dim)


def sidecar_table(
    keys: list[str],
    fields: dict[str, list[np.ndarray | None]],
    truncated: dict[str, list[bool]],
    dim: int,
    dtype: str,
) -> pa.Table:
    columns: dict[str, pa.Array] = {"key": pa.array(keys, pa.string())}
    for field, vectors in fields.items():
        if len(vectors) != len(keys):
            raise ValueError(f"sidecar field {field!r}: {len(vectors)} vectors for {len(keys)} keys")
        columns[field] = embedding_column(vectors, dim, dtype)
        columns[f"{field}_present"] = pa.array([v is not None for v in vectors], pa.bool_())
        columns[f"{field}_truncated"] = pa.array(truncated[field], pa.bool_())
    return pa.table(columns)


def field_matrix(table: pa.Table, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [rows, dim], zeros where absent; boolean [rows] present) of one field."""
    column = table[field].combine_chunks()
    dim = column.type.list_size
    present = np.asarray(table[f"{field}_present"].to_numpy(zero_copy_only=False), dtype=bool)
    matrix = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return matrix, present


def reference_tar(table: pa.Table, names: dict[str, str]) -> bytes:
    """The reference LLM2CLIP sidecar tar: for each key, `{key}.{names[field]}` = float32 bytes. A field
    missing for a sample is left out of that sample, never zero-filled."""
    matrices = {field: field_matrix(table, field) for field in names}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for row, key in enumerate(table["key"].to_pylist()):
            for field, name in names.items():
                matrix, present = matrices[field]
                if not present[row]:
                    continue
                data = matrix[row].astype(np.float32).tobytes()
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class SidecarError(BadInputError):
    """A sidecar that does not fit what reads it; the message names the file and the column."""


def check_sidecar_schema(uri: str, dim: int) -> None:
    """From the parquet footer alone: a `key` column and, for every embedding field, a `{field}_present`
    column and vectors of `dim` floats."""
    try:
        with fsspec.open(uri, "rb") as handle:
            schema = pq.read_schema(handle)
    except (OSError, pa.ArrowException) as err:
        raise SidecarError(f"{uri}: not a readable parquet sidecar ({type(err).__name__}: {err})") from None
    if "key" not in schema.names:
        raise SidecarError(f"{uri}: no 'key' column; its columns are: {', '.join(schema.names)}")
    fields = [f for f in schema if pa.types.is_fixed_size_list(f.type)]
    if not fields:
        raise SidecarError(f"{uri}: no embedding column (fixed-size float lists); rerun embed")
    for field in fields:
        if field.type.list_size != dim:
            raise SidecarError(
                f"{uri}: column {field.name!r} holds {field.type.list_size}-dim vectors, expected {dim} "
                "(the embed stage's recorded dim); the sidecar belongs to another encoder"
            )
        if f"{field.name}_present" not in schema.names:
            raise SidecarError(f"{uri}: column {field.name!r} has no {field.name}_present column")
