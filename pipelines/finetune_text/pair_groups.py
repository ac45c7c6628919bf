"""Training pairs as row groups read on demand: an in-memory table cut into groups (tests, benchmarks)
or pairs/train.parquet's own row groups (the stage), so a worker holds one shuffle window of rows, never
the table (batches.py decides which groups a step needs)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

BOOKKEEPING_COLUMNS = ("key", "kind")  # written for people and tests; the loss never reads them
TABLE_GROUP_ROWS = 4096


@dataclasses.dataclass
class PairGroups:
    sizes: list[int]  # rows per group
    # per group, rows per task (the `task` column); None when the pairs are one task
    task_counts: list[dict[str, int]] | None
    read: Callable[[int], pa.Table]  # group index -> its rows
    reads: int = 0  # groups read so far (what a test or benchmark counts)

    @property
    def num_rows(self) -> int:
        return sum(self.sizes)

    @property
    def multi_task(self) -> bool:
        return self.task_counts is not None and len({t for c in self.task_counts for t in c}) > 1

    def rows_of(self, groups: list[int]) -> pa.Table:
        self.reads += len(groups)
        return pa.concat_tables([self.read(g) for g in groups])

    @classmethod
    def of_table(cls, table: pa.Table, group_rows: int = TABLE_GROUP_ROWS) -> PairGroups:
        starts = list(range(0, table.num_rows, group_rows)) or [0]
        slices = [table.slice(start, group_rows) for start in starts]
        return cls(
            sizes=[s.num_rows for s in slices],
            task_counts=(
                [dict(Counter(s["task"].to_pylist())) for s in slices]
                if "task" in table.column_names
                else None
            ),
            read=lambda group: slices[group],
        )

    @classmethod
    def of_parquet(cls, uri: str) -> PairGroups:
        """pairs/train.parquet's row groups, without its bookkeeping columns; only the footer is read
        here (a group's task comes from its column statistics when it holds one task)."""
        import fsspec

        handle = fsspec.open(uri, "rb").open()  # kept open for the worker's life: groups are read lazily
        parquet = pq.ParquetFile(handle)
        names = [n for n in parquet.schema_arrow.names if n not in BOOKKEEPING_COLUMNS]
        metadata = parquet.metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        task_counts = None
        if "task" in names:
            column = parquet.schema_arrow.get_field_index("task")
            task_counts = []
            for group, size in enumerate(sizes):
                stats = metadata.row_group(group).column(column).statistics
                if (
                    stats is not None
                    and stats.has_min_max
                    and stats.min == stats.max
                    and not stats.null_count
                ):
                    task_counts.append({stats.min: size})
                else:
                    tasks = parquet.read_row_group(group, columns=["task"])["task"].to_pylist()
                    task_counts.append(dict(Counter(tasks)))
        return cls(
            sizes=sizes, task_counts=task_counts, read=lambda g: parquet.read_row_group(g, columns=names)
        )


def as_pair_groups(pairs: pa.Table | PairGroups) -> PairGroups:
    return pairs if isinstance(pairs, PairGroups) else PairGroups.of_table(pairs)
