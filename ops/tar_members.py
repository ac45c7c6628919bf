"""Users' webdataset tars read member by member, for ingest: samples grouped by key as webdataset groups
them (consecutive members whose file name agrees up to the first dot), and a cut-off tar reported as an
event rather than raised, so the samples before the cut are kept and the cut is counted."""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Iterator

import fsspec

from ops.webdataset_io import check_end_of_archive

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
KNOWN_EXTENSIONS = (*IMAGE_EXTENSIONS, "txt", "json")


@dataclasses.dataclass
class TarSample:
    key: str  # the member names' shared stem (with the folder inside the tar, if any)
    members: dict[str, bytes]  # extension (lower case, after the first dot) -> bytes
    ordinal: int  # position among the tar's samples, from 0


@dataclasses.dataclass(frozen=True)
class Truncated:
    ordinal: int  # samples read before the cut
    error: str


def _split(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_tar_samples(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[TarSample | Truncated]:
    """The tar's samples in order; a Truncated last when the tar ends early or is corrupt (the sample
    being read at the cut is lost to it). A member whose extension repeats within one key starts a new
    sample of the same key (the caller counts it as a repeated key)."""
    current: TarSample | None = None
    ordinal = 0
    try:
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split(member.name)
                data = tar.extractfile(member).read()
                if len(data) != member.size:  # stream mode reads a cut member short, without an error
                    raise tarfile.ReadError(f"member {member.name} cut at {len(data)} of {member.size} bytes")
                if current is not None and (current.key != key or ext in current.members):
                    yield current
                    ordinal += 1
                    current = None
                if current is None:
                    current = TarSample(key, {}, ordinal)
                current.members[ext] = data
            check_end_of_archive(fs, path, tar)  # a cut between members reads as a clean end
    except (tarfile.TarError, EOFError, OSError) as error:
        yield Truncated(ordinal, f"{type(error).__name__}: {error}")
        return
    if current is not None:
        yield current


def iter_folder_samples(fs: fsspec.AbstractFileSystem, root: str, skip: int = 0) -> Iterator[TarSample]:
    """A folder of files read as a tar would be: files grouped by their path below root up to the first
    dot of the name (so photos/cat.jpg and photos/cat.txt are one sample, key photos/cat), in sorted
    order, which keeps a key's files together. The first `skip` samples are listed, not read."""
    root = root.rstrip("/")
    files = sorted(p for p in fs.find(root) if not p.rsplit("/", 1)[-1].startswith("."))
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for path in files:
        key, ext = _split(path[len(root) + 1 :])
        if groups and groups[-1][0] == key and ext not in dict(groups[-1][1]):
            groups[-1][1].append((ext, path))
        else:
            groups.append((key, [(ext, path)]))
    for ordinal, (key, members) in enumerate(groups):
        if ordinal >= skip:
            yield TarSample(key, {ext: fs.cat_file(path) for ext, path in members}, ordinal)
