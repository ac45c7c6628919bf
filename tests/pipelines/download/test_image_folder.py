"""download.image_folder: a plain folder of images (nested, with .txt captions beside some) and a caption
table joined by relative file name become the download layout; what matched and what did not is counted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ops.artifact_dir import ArtifactDir
from ops.config_schema import ConfigError
from ops.stage import StageContext
from ops.webdataset_io import iter_samples
from pipelines.download.config import DownloadConfig
from pipelines.download.stage import run_download
from tests.pipelines.download.test_ingest import _image


def _folder(root: Path) -> Path:
    images = root / "images"
    (images / "cats").mkdir(parents=True)
    (images / "dogs").mkdir()
    for i in range(6):
        (images / "cats" / f"cat{i}.jpg").write_bytes(_image(i))
        (images / "dogs" / f"dog{i}.png").write_bytes(_image(10 + i, "PNG"))
    (images / "cats" / "cat0.txt").write_text("a cat from its txt")
    (images / "notes.md").write_bytes(b"# not an image")  # a sample with no image
    (images / "dogs" / "dog9.jpg").write_bytes(b"broken")  # undecodable
    rows = [
        {"file_name": f"dogs/dog{i}.png", "text": f"dog number {i}", "dense": f"a long dog {i}"}
        for i in range(6)
    ]
    rows.append({"file_name": "dogs/missing.png", "text": "no such file", "dense": ""})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return images


def test_a_folder_and_its_caption_table_become_shards(tmp_path):
    images = _folder(tmp_path)
    config = DownloadConfig(
        image_folder=str(images),
        captions=str(tmp_path / "captions.jsonl"),
        caption_col="text",
        extra_columns=("dense",),
        samples_per_shard=5,
        resize_mode="no",
    )
    artifact = ArtifactDir(str(tmp_path / "dl"))
    outcome = run_download(config, StageContext(artifact, {}))
    counts = outcome.counts
    assert (counts.num_out, counts.num_rejected) == (12, 2)
    assert counts.rejected_by_reason == {"no_image": 1, "undecodable_image": 1}
    rows = []
    for tar in sorted((Path(artifact.path) / "shards").glob("*.tar")):
        status = pq.read_table(tar.with_suffix(".parquet")).to_pylist()
        assert [s["key"] for s in iter_samples(artifact.fs, str(tar))] == [r["key"] for r in status]
        rows += status
    by_source = {r["source_key"]: r for r in rows}
    assert set(by_source) == {f"cats/cat{i}" for i in range(6)} | {f"dogs/dog{i}" for i in range(6)}
    assert by_source["cats/cat0"]["caption"] == "a cat from its txt"
    assert by_source["cats/cat1"]["caption"] is None
    assert (
        by_source["dogs/dog2"]["caption"] == "dog number 2"
        and by_source["dogs/dog2"]["dense"] == "a long dog 2"
    )
    assert outcome.details["caption_table_join"] == {
        "table_rows": 7,
        "rows_matching_no_sample": 1,
        "samples_without_row": 8,  # six cats, notes, dog9
    }


def test_captions_need_an_image_folder_and_sources_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match="captions"):
        DownloadConfig(captions="x.csv")
    with pytest.raises(ConfigError, match="one of url_list, sources, shards, image_folder"):
        DownloadConfig(shards="a", image_folder="b")
