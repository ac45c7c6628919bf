"""General text pairs (E5-style query, positive, negative) mixed into finetune_text beside the caption
pairs, as LLM2CLIP's fine-tuning mixes E5 with CC3M's; read from local parquet or JSON-lines files.

Rows without a query or positive (or, with hard negatives, a negative) are rejected with a reason, never
dropped silently; a file without the columns fails, naming it and the columns it has.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from ops.errors import BadInputError
from pipelines.finetune_text.config import CAPTION_TASK, TextPairSource, query_prefix

KIND = "text_pair"


def _read(source: TextPairSource) -> pa.Table:
    path = Path(source.path)
    where = f"finetune_text.text_pairs[{source.name}]: {path}"
    if not path.is_file():
        raise BadInputError(f"{where}: not found")
    fmt = source.format
    if fmt == "auto":
        fmt = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower(), "")
        if not fmt:
            raise BadInputError(
                f"{where}: cannot tell its format from the suffix; set format: parquet or jsonl"
            )
    try:
        table = pq.read_table(path) if fmt == "parquet" else pj.read_json(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise BadInputError(f"{where}: not a readable {fmt} file ({error})") from None
    return table.slice(0, source.max_rows) if source.max_rows else table


def read_text_pairs(source: TextPairSource, need_negatives: bool) -> tuple[pa.Table, pa.Table]:
    """(training rows in the caption pairs' columns, rejected rows with `reason`). Training rows: key
    ("{name}/{row}"), kind, caption_1 (query), caption_2 (positive), hard_negative_1/2 (the negative, with
    need_negatives), task (the source's name) and query_instruction."""
    table = _read(source)
    required = ["query", "positive", *(["negative"] if need_negatives else [])]
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise BadInputError(
            f"finetune_text.text_pairs[{source.name}]: {source.path} has no column {missing} "
            f"(it has {table.column_names}); rows need query, positive and, with negatives, negative"
        )
    values = {c: table[c].cast(pa.string()).to_pylist() for c in required}
    reasons = [
        next((f"missing_{c}" for c in required if not (values[c][row] or "").strip()), None)
        for row in range(table.num_rows)
    ]
    good = pa.array([reason is None for reason in reasons])
    rejected = pa.table(
        {
            "source": pa.array([source.name] * table.num_rows, pa.string()),
            "row": pa.array(range(table.num_rows), pa.int64()),
            **{c: pa.array(values[c], pa.string()) for c in required},
            "reason": pa.array(reasons, pa.string()),
        }
    ).filter(pc.invert(good))
    kept = [row for row, reason in enumerate(reasons) if reason is None]
    columns = {
        "key": pa.array([f"{source.name}/{row}" for row in kept], pa.string()),
        "kind": pa.array([KIND] * len(kept), pa.string()),
        "caption_1": pa.array([values["query"][row] for row in kept], pa.string()),
        "caption_2": pa.array([values["positive"][row] for row in kept], pa.string()),
    }
    if need_negatives:
        negatives = pa.array([values["negative"][row] for row in kept], pa.string())
        columns.update({"hard_negative_1": negatives, "hard_negative_2": negatives})
    columns["task"] = pa.array([source.name] * len(kept), pa.string())
    columns["query_instruction"] = pa.array([query_prefix(source.instruction)] * len(kept), pa.string())
    return pa.table(columns), rejected


def with_task_columns(caption_pairs: pa.Table, caption_query_instruction: str) -> pa.Table:
    """The caption pairs as one task among the text-pair sets, their queries with the caption instruction."""
    rows = caption_pairs.num_rows
    return caption_pairs.append_column("task", pa.array([CAPTION_TASK] * rows, pa.string())).append_column(
        "query_instruction", pa.array([query_prefix(caption_query_instruction)] * rows, pa.string())
    )
