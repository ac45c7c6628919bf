"""What img2dataset left behind, reconciled: per-shard stats, the rejected rows with their reasons, and the
stage's counts and metrics."""

from __future__ import annotations

import contextlib
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome
from pipelines.download.config import SCENE_COLUMNS, SCREENED_OUT, SHARDS_DIR

REJECTED = "rejected.parquet"
STATS_FIELDS = ("count", "successes", "failed_to_download", "failed_to_resize", "duration")


def shard_stats(artifact: ArtifactDir) -> dict[int, dict]:
    """img2dataset's stats of each finished shard, by shard id. Raises on a stats file that does not
    parse: call discard_partial_stats first on a folder a killed run may have left."""
    names = [n for n in artifact.list(SHARDS_DIR) if n.endswith("_stats.json")]
    return {int(n.split("_")[0]): artifact.read_json(f"{SHARDS_DIR}/{n}") for n in names}


def discard_partial_stats(artifact: ArtifactDir) -> list[int]:
    """Remove the stats files a kill left half-written, and return their shard ids.

    img2dataset writes `{shard}_stats.json` in place, after the shard's tar and status parquet, and its
    incremental mode counts any such file as a finished shard. A run killed during that write leaves an
    empty or truncated file: removed here, img2dataset downloads the shard again and rewrites all three
    files, where keeping it would skip the shard and then fail reading its stats."""
    partial = []
    for name in artifact.list(SHARDS_DIR):
        if not name.endswith("_stats.json"):
            continue
        try:
            stats = artifact.read_json(f"{SHARDS_DIR}/{name}")
            complete = isinstance(stats, dict) and all(field in stats for field in STATS_FIELDS)
        except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError is a ValueError
            complete = False
        if not complete:
            artifact.remove(f"{SHARDS_DIR}/{name}")
            partial.append(int(name.split("_")[0]))
    return sorted(partial)


def write_rejected(artifact: ArtifactDir, shard_ids: list[int]) -> dict[str, int]:
    """rejected.parquet, streamed: the rows screened out before download, then per shard the rows
    img2dataset did not turn into samples, each with a reason; returns the count per reason."""
    with contextlib.ExitStack() as stack:
        screened = None
        if artifact.exists(SCREENED_OUT):
            screened = pq.ParquetFile(stack.enter_context(artifact.open(SCREENED_OUT)))
        return _write_rejected(artifact, shard_ids, screened)


def _write_rejected(
    artifact: ArtifactDir, shard_ids: list[int], screened: pq.ParquetFile | None
) -> dict[str, int]:
    schema = pa.schema(
        [
            *[(c, pa.string()) for c in ("key", "url", "caption", *SCENE_COLUMNS, "status", "error_message")],
            ("shard", pa.int32()),
            ("row", pa.int64()),
            ("reason", pa.string()),
        ]
    )
    if screened is not None:  # the table's extra columns (source, the user's) too
        for field in screened.schema_arrow:
            if field.name not in schema.names:
                schema = schema.append(field)
    by_reason: Counter[str] = Counter()
    with artifact.parquet_writer(REJECTED, schema) as writer:

        def write(table: pa.Table) -> None:
            by_reason.update(table["reason"].to_pylist())
            columns = {
                f.name: table[f.name].cast(f.type)
                if f.name in table.column_names
                else pa.nulls(table.num_rows, f.type)
                for f in schema
            }
            writer.write_table(pa.table(columns, schema=schema))

        if screened is not None:
            for batch in screened.iter_batches():
                write(pa.Table.from_batches([batch]))
        for shard in shard_ids:
            with artifact.open(f"{SHARDS_DIR}/{shard:05d}.parquet") as handle:
                rows = pq.read_table(handle)
            failed = rows.filter(pc.not_equal(rows.column("status"), "success"))
            if failed.num_rows:
                reasons = [
                    rejection_reason(s, m)
                    for s, m in zip(failed["status"].to_pylist(), failed["error_message"].to_pylist())
                ]
                failed = failed.append_column("shard", pa.array([shard] * failed.num_rows, pa.int32()))
                write(failed.append_column("reason", pa.array(reasons, pa.string())))
    return dict(by_reason)


def summarize_ingest(artifact: ArtifactDir, elapsed_s: float, ctx: StageContext) -> StageOutcome:
    """An ingest's counts from its shards' stats and rejected parts (per sample; member rejections, such
    as unknown extensions of kept samples, are counted apart), rejected.parquet and
    rejected_members.parquet streamed from the parts."""
    from pipelines.download.ingest import REJECTED_PARTS, rejected_table

    stats = shard_stats(artifact)
    parts = [n for n in artifact.list(REJECTED_PARTS) if n.endswith(".parquet")]
    by_reason: Counter[str] = Counter()
    by_member_reason: Counter[str] = Counter()
    schema = rejected_table([]).schema
    tail_rows = 0
    with (
        artifact.parquet_writer(REJECTED, schema) as samples,
        artifact.parquet_writer("rejected_members.parquet", schema) as members,
    ):
        for name in parts:
            with artifact.open(f"{REJECTED_PARTS}/{name}") as handle:
                table = pq.read_table(handle).cast(schema)
            is_members = name.endswith("_members.parquet")
            if name == "tail.parquet":
                tail_rows = table.num_rows
            (by_member_reason if is_members else by_reason).update(table["reason"].to_pylist())
            (members if is_members else samples).write_table(table)
    successes = sum(s["successes"] for s in stats.values())
    num_rejected = sum(by_reason.values())
    met = sum(s["count"] for s in stats.values()) + tail_rows
    if met != successes + num_rejected:
        raise RuntimeError(
            f"download: the shards met {met} samples but hold {successes} and rejected {num_rejected}"
        )
    counts = StageCounts(
        num_in=successes + num_rejected,
        num_out=successes,
        num_rejected=num_rejected,
        rejected_by_reason=dict(by_reason),
    )
    metrics = {
        "num_shards": float(len(stats)),
        "images_per_s": successes / max(elapsed_s, 1e-9),
        **{f"rejected_members_{r}": float(n) for r, n in by_member_reason.items()},
    }
    for shard, s in sorted(stats.items()):
        ctx.log_metrics({"shard_duration_s": s["duration"]}, shard)
    details = {"rejected_members_by_reason": dict(by_member_reason)}
    if artifact.exists("caption_table_join.json"):  # image_folder + captions: the join's counts
        details["caption_table_join"] = artifact.read_json("caption_table_join.json")
        metrics.update({f"caption_table_{k}": float(v) for k, v in details["caption_table_join"].items()})
    return StageOutcome(counts=counts, metrics=metrics, details=details)


def rejection_reason(status: str, error_message: str | None) -> str:
    """img2dataset's status, with publisher opt-outs told apart from dead links."""
    if error_message and "X-Robots-Tag" in error_message:
        return "opted_out"
    return status


def summarize_download(
    artifact: ArtifactDir,
    num_rows: int,
    num_shards: int,
    done_before: set[int],
    elapsed_s: float,
    ctx: StageContext,
) -> StageOutcome:
    """Reconcile img2dataset's shard stats with the input table (num_rows rows, of which those in
    screened_out.parquet never reached img2dataset), write the rejected sink, log metrics."""
    stats = shard_stats(artifact)
    missing = sorted(set(range(num_shards)) - set(stats))
    if missing:
        raise RuntimeError(f"download: shards {missing[:10]} have no stats file; rerun to finish them")
    count = sum(s["count"] for s in stats.values())
    successes = sum(s["successes"] for s in stats.values())
    by_reason = write_rejected(artifact, sorted(stats))
    screened_out = by_reason.get("bad_url", 0) + by_reason.get("duplicate_url", 0)
    if count + screened_out != num_rows:
        raise RuntimeError(
            f"download: shards account for {count} rows and {screened_out} were screened out, "
            f"the url table has {num_rows}"
        )

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
