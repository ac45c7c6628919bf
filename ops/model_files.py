"""Model references as the loaders need them: a local folder.

A model field in a recipe is a Hugging Face hub id, a local folder, or a folder on an object store
(`s3://bucket/prefix/encoder`, what a stage writes when the artifact root is one). transformers and
safetensors only read local folders, so an object-store folder is copied to a temporary local one for as
long as the loader needs it; the other two pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def is_remote(reference: str) -> bool:
    """True for a URI on a non-local filesystem (s3://, gs://, ...); hub ids and paths are not."""
    if "://" not in reference:
        return False
    return reference.split("://", 1)[0] not in ("file", "local")


@contextlib.contextmanager
def local_model(reference: str) -> Iterator[str]:
    """A local folder (or hub id) that from_pretrained takes, valid inside the block."""
    if not is_remote(reference):
        yield reference.removeprefix("file://")
        return
    from ops.artifact_dir import ArtifactDir

    with ArtifactDir(reference).local_copy("") as folder:
        yield folder
