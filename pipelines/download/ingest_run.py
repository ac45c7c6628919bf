"""The ingest loop (ingest.py says what it makes): input tars read in order, samples checked in chunks
on the task's threads, output shards written as they fill; resumes after the last complete shard. Runs
as one Ray task holding download.processes_count CPUs (its checking threads), or in-process without Ray."""

from __future__ import annotations

import time
from collections.abc import Iterator

from ops.artifact_dir import ArtifactDir
from ops.tar_members import TarSample, Truncated
from pipelines.download.config import SHARDS_DIR, DownloadConfig
from pipelines.download.ingest import (
    CHUNK,
    REJECTED_PARTS,
    Checked,
    SampleChecker,
    Seen,
    rejected_table,
    rejection,
    seen_from_shards,
    unknown_members,
    write_shard,
)
from pipelines.download.ingest_inputs import InputSource, input_source
from pipelines.download.results import discard_partial_stats, shard_stats

TAIL = f"{REJECTED_PARTS}/tail.parquet"  # rejections after the last shard's last sample
JOIN = "caption_table_join.json"  # image_folder with captions: rows and samples that found no partner


def _resume_point(artifact: ArtifactDir) -> tuple[int, tuple[int, int], Seen]:
    """(first shard to write, input position to read from, keys met): after the complete shards."""
    discard_partial_stats(artifact)
    done = set(shard_stats(artifact))
    shard = 0
    while shard in done:
        shard += 1
    if shard == 0:
        return 0, (0, 0), Seen()
    stats = artifact.read_json(f"{SHARDS_DIR}/{shard - 1:05d}_stats.json")
    return shard, tuple(stats["input_end"]), seen_from_shards(artifact, list(range(shard)))


def _read(source: InputSource, start: tuple[int, int], seen: Seen) -> Iterator[Checked]:
    """Every input sample from `start` on, repeated keys already marked; a cut-off tar's loss comes as
    an item of its own, rejected as truncated_tar, in its place in the stream."""
    first_part, first_ordinal = start
    for part in range(first_part, len(source.parts)):
        name = source.parts[part]
        rows = source.rows(part)
        skip = first_ordinal if part == first_part else 0
        for event in source.samples(part, skip):
            if isinstance(event, Truncated):
                if event.ordinal >= skip:
                    cut = Checked(TarSample("", {}, event.ordinal), name, (part + 1, 0))
                    cut.reason, cut.detail = "truncated_tar", f"after {event.ordinal} samples: {event.error}"
                    yield cut
                break
            if event.ordinal < skip:
                continue
            item = Checked(event, name, (part, event.ordinal + 1))
            if not seen.add(event.key):
                item.reason, item.detail = "duplicate_key", f"key {event.key!r} met before"
            elif event.key in rows:
                item.meta["_row"] = rows[event.key]
            yield item


def ingest(config: DownloadConfig, artifact_uri: str) -> None:
    artifact = ArtifactDir(artifact_uri)
    source = input_source(config)
    shard, start, seen = _resume_point(artifact)
    if start != (0, 0):
        print(
            f"[download] ingest resuming at shard {shard}, input tar {start[0]} sample {start[1]}", flush=True
        )
    checker = SampleChecker(config)
    digits = len(str(config.samples_per_shard - 1))
    accepted: list[Checked] = []
    rejected: list[dict] = []
    members: list[dict] = []
    started = time.perf_counter()
    position = start

    def take(items: list[Checked]) -> None:
        nonlocal shard, accepted, rejected, members, started, position
        for item in items:
            position = item.after
            if item.reason:
                rejected.append(rejection(item.sample.key, item.tar, item.reason, item.detail))
            else:
                for ext in unknown_members(item.sample):
                    members.append(rejection(item.sample.key, item.tar, "unknown_extension", "", f".{ext}"))
                accepted.append(item)
            if len(accepted) == config.samples_per_shard:
                write_shard(
                    artifact,
                    shard,
                    accepted,
                    rejected,
                    members,
                    config.extra_columns,
                    position,
                    started,
                    digits,
                )
                print(f"[download] ingest: shard {shard:05d} written ({len(accepted)} samples)", flush=True)
                shard, accepted, rejected, members, started = shard + 1, [], [], [], time.perf_counter()

    chunk: list[Checked] = []
    for item in _read(source, start, seen):
        chunk.append(item)
        if len(chunk) == CHUNK:
            take(checker.check(chunk))
            chunk = []
    take(checker.check(chunk))
    end = (len(source.parts), 0)
    if accepted:
        write_shard(artifact, shard, accepted, rejected, members, config.extra_columns, end, started, digits)
    else:
        artifact.write_parquet_atomic(TAIL, rejected_table(rejected))
        artifact.write_parquet_atomic(TAIL.replace(".parquet", "_members.parquet"), rejected_table(members))
    checker.pool.shutdown()
    if source.table_rows is not None:  # a caption table joined by file name: what matched what
        keys = source.rows(0)
        matched = sum(seen.has(key) for key in keys)
        join = {
            "table_rows": source.table_rows,
            "rows_matching_no_sample": source.table_rows - matched,
            "samples_without_row": len(seen.digests) - matched,
        }
        artifact.write_json_atomic(JOIN, join)
        print(f"[download] caption table: {join}", flush=True)
