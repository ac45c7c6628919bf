"""One stage run's artifact directory on any fsspec filesystem (local path, shared mount, s3://...).

Completion is a file written last: per shard a marker under ``_shards/``, per stage ``manifest.json``.
Writes of those go through a temporary name and a rename, so a reader sees all of a file or none of it;
on object stores, where there is no rename, a single-object put gives the same guarantee.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ops.failpoints import failpoint

MANIFEST_NAME = "manifest.json"
SHARD_MARKER_DIR = "_shards"


class ArtifactDir:
    """A directory named by URI, with atomic JSON writes, shard markers and a manifest."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.uri)

    def __repr__(self) -> str:
        return f"ArtifactDir({self.uri!r})"

    def __reduce__(self):
        # Rebuild from the URI in Ray workers instead of pickling a filesystem's client state.
        return (ArtifactDir, (self.uri,))

    def child_path(self, relative: str) -> str:
        """Path inside the filesystem (what fs.open takes)."""
        return f"{self.path}/{relative}" if relative else self.path

    def child_uri(self, relative: str) -> str:
        """URI of a file below this directory (what other libraries take)."""
        return f"{self.uri}/{relative}"

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def exists(self, relative: str = "") -> bool:
        return self.fs.exists(self._fresh(self.child_path(relative)))

    def _fresh(self, path: str) -> str:
        """path, with the filesystem's cached listings of it and its parents dropped. Object-store clients
        (s3fs, gcsfs) cache directory listings per process: a driver that listed `_shards/` before its Ray
        workers wrote their markers would otherwise never see them."""
        if not self.is_local:
            self.fs.invalidate_cache(path)
        return path

    def open(self, relative: str, mode: str = "rb"):
        if "w" in mode:
            self.fs.makedirs(self.child_path(relative).rsplit("/", 1)[0], exist_ok=True)
        return self.fs.open(self.child_path(relative), mode)

    def list(self, relative: str = "") -> list[str]:
        """Names (not paths) directly below relative; empty when it does not exist."""
        if not self.exists(relative):
            return []
        listed = self.fs.ls(self._fresh(self.child_path(relative)), detail=False)
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listed)

    def remove(self, relative: str) -> None:
        """Delete one file below this directory; nothing happens when it is already gone."""
        if self.exists(relative):
            self.fs.rm(self.child_path(relative))

    def write_bytes_atomic(self, relative: str, data: bytes) -> None:
        final = self.child_path(relative)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        if not self.is_local:
            self.fs.pipe_file(final, data)
            return
        staging = f"{final}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(staging, "wb") as handle:
            handle.write(data)
        self.fs.mv(staging, final)

    def write_json_atomic(self, relative: str, payload: Any) -> None:
        text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False)
        self.write_bytes_atomic(relative, text.encode("utf-8"))

    def write_parquet_atomic(self, relative: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.write_bytes_atomic(relative, sink.getvalue())

    @contextlib.contextmanager
    def parquet_writer(self, relative: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """A ParquetWriter whose file appears at relative only when the block exits cleanly: tables are
        written one at a time (memory holds one), to a staging file moved (local) or uploaded (object
        store) at the end; a failure leaves no file behind."""
        final = self.child_path(relative)
        with tempfile.TemporaryDirectory(prefix="artifact-") as scratch:
            staging = f"{final}.tmp-{uuid.uuid4().hex}" if self.is_local else f"{scratch}/part.parquet"
            if self.is_local:
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            try:
                with pq.ParquetWriter(staging, schema) as writer:
                    yield writer
            except BaseException:
                if self.is_local and self.fs.exists(staging):
                    self.fs.rm(staging)
                raise
            if self.is_local:
                self.fs.mv(staging, final)
            else:
                self.fs.put_file(staging, final)

    def read_json(self, relative: str) -> Any:
        with self.fs.open(self._fresh(self.child_path(relative)), "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))

    # Stage completion -----------------------------------------------------------------------------
    def is_complete(self) -> bool:
        """True only once the manifest has been written; a directory without one is never reused."""
        return self.exists(MANIFEST_NAME)

    def read_manifest(self) -> dict[str, Any]:
        return self.read_json(MANIFEST_NAME)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_json_atomic(MANIFEST_NAME, manifest)

    def clear(self) -> None:
        """Remove everything, the manifest first, so an interrupted clear never looks complete."""
        if self.exists(MANIFEST_NAME):
            self.fs.rm(self.child_path(MANIFEST_NAME))
        if self.exists():
            self.fs.rm(self.path, recursive=True)

    @contextlib.contextmanager
    def exclusive(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the directory's lock (a sibling `<dir>.lock` file, so clear() keeps it) while a stage
        writes here: a second workflow on the same artifact root waits instead of writing beside it.
        An flock: the kernel drops it when its holder dies, even by SIGKILL, so a killed run never leaves
        a stale lock. Local (and NFS-with-locks) storage only: on object stores, which have no locks,
        this holds nothing and concurrent runs of one stage are the caller's to avoid."""
        if not self.is_local:
            yield
            return
        lock_path = f"{self.path}.lock"
        self.fs.makedirs(lock_path.rsplit("/", 1)[0], exist_ok=True)
        with open(lock_path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(lock_path)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # Shard completion -----------------------------------------------------------------------------
    def shard_done(self, shard_id: str) -> bool:
        return self.exists(f"{SHARD_MARKER_DIR}/{shard_id}.json")

    def mark_shard_done(self, shard_id: str, stats: dict[str, Any]) -> None:
        """Write after the shard's data: the marker's presence means the data is whole."""
        self.write_json_atomic(f"{SHARD_MARKER_DIR}/{shard_id}.json", {"shard": shard_id, **stats})
        failpoint("shard_marked")  # kill-and-resume tests: die right after a marker, deterministically

    def shard_stats(self) -> list[dict[str, Any]]:
        names = [n for n in self.list(SHARD_MARKER_DIR) if n.endswith(".json") and ".tmp-" not in n]
        return [self.read_json(f"{SHARD_MARKER_DIR}/{name}") for name in names]

    # Libraries that only write local folders (save_pretrained) ------------------------------------
    @contextlib.contextmanager
    def local_dir(self, relative: str) -> Iterator[str]:
        """A local folder for relative: the real one on local storage, else a temp dir uploaded on exit."""
        if self.is_local:
            target = self.child_path(relative)
            self.fs.makedirs(target, exist_ok=True)
            yield target
            return
        with tempfile.TemporaryDirectory(prefix="artifact-") as staging:
            yield staging
            self.fs.put(staging + "/", self.child_path(relative), recursive=True)

    @contextlib.contextmanager
    def local_copy(self, relative: str) -> Iterator[str]:
        """A local folder holding relative's files: the real one on local storage, else a temp download."""
        if self.is_local:
            yield self.child_path(relative)
            return
        with tempfile.TemporaryDirectory(prefix="artifact-") as staging:
            self.fs.get(self.child_path(relative) + "/", staging, recursive=True)
            yield staging


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
