"""train_vision on Ray Train over a copy of the demo with planted faults: samples whose captions embed
rejected and images that do not decode. The run trains to its last step, and the manifest counts every
skipped sample with its reason (in = out + rejected), each listed in the rejected sink."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import copy_of_demo, run_workflow


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def _corrupt_images(tar_path: Path, keys: set[str]) -> None:
    members = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name.split(".", 1)[0] in keys and member.name.endswith(".jpg"):
                data = b"\xff\xd8 truncated " + data[:40]
            members.append((member.name, data))
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _drop_captions(sidecar: Path, keys: set[str]) -> None:
    table = pq.read_table(sidecar)
    for column in [c for c in table.column_names if c.endswith("_present")]:
        values = [
            present and key not in keys
            for key, present in zip(table["key"].to_pylist(), table[column].to_pylist())
        ]
        table = table.set_column(table.column_names.index(column), column, pa.array(values))
    pq.write_table(table, sidecar)


@pytest.mark.slow
def test_caption_less_and_undecodable_samples_are_skipped_counted_and_kept(demo_root, ray_session, tmp_path):
    root = copy_of_demo(demo_root, tmp_path / "root")
    shards = _complete(root, "download") / "shards"
    status = pq.read_table(shards / "00000.parquet").to_pylist()
    train_keys = [row["key"] for row in status if row["status"] == "success" and row["split"] == "train"]
    undecodable, caption_less = set(train_keys[:2]), set(train_keys[2:5])
    _corrupt_images(shards / "00000.tar", undecodable)
    _drop_captions(_complete(root, "embed") / "sidecars" / "00000.parquet", caption_less)

    assert run_workflow(root, "--only", "train_vision") == 0

    folder = _complete(root, "train_vision")
    manifest = json.loads((folder / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["rejected_by_reason"] == {"no_caption_features": 3, "undecodable_image": 2}
    assert counts["num_in"] == 64 and counts["num_out"] == 59 and counts["num_rejected"] == 5
    assert manifest["metrics"]["num_train_samples"] == 48 - 3
    rejected = {
        reason: set(pq.read_table(folder / "rejected" / f"{reason}.parquet")["key"].to_pylist())
        for reason in ("no_caption_features", "undecodable_image")
    }
    assert rejected == {"no_caption_features": caption_less, "undecodable_image": undecodable}
    final = json.loads((folder / "eval.json").read_text())  # written after the last step
    assert final["dense_eval_samples"] == 16
