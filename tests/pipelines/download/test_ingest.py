"""download.shards: a user's webdataset tars become the download stage's layout. Every sample is
accounted for (kept, or rejected with its reason), shards are re-cut to samples_per_shard with the tar,
status table and stats side by side, bytes are kept as they are without a resize, captions come from the
parquet beside a tar first, and a killed ingest resumes to the same shards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ops.artifact_dir import ArtifactDir
from ops.stage import StageContext
from ops.webdataset_io import iter_samples
from pipelines.download import ingest as ingest_module
from pipelines.download.config import DownloadConfig
from pipelines.download.stage import run_download
from tests.reliability.corpus import write_tar


def _image(seed: int, fmt: str = "JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 28, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _sample(key: str, seed: int, ext: str = "jpg", caption: str | None = None) -> list[tuple[str, bytes]]:
    fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    members = [(f"{key}.{ext}", _image(seed, fmt))]
    if caption is not None:
        members.append((f"{key}.txt", caption.encode()))
    return members


def _inputs(root: Path) -> tuple[Path, dict[str, str]]:
    """Three tars; returns the folder and the expected reason per rejected key."""
    root.mkdir()
    a = []
    for i in range(30):
        a += _sample(f"a{i:03d}", i, caption=f"caption a{i}")
    a += _sample("apng", 100, "png", "a png") + _sample("awebp", 101, "webp", "a webp")
    a += [("bad.jpg", b"\xff\xd8 not a jpeg"), ("bad.txt", b"broken")]
    a += [("textonly.txt", b"no image here")]
    a += [*_sample("withcls", 102, caption="has a label"), ("withcls.cls2", b"7")]
    a += _sample("a005", 103, caption="the key a005 again")  # repeated within the tar
    write_tar(root / "00000.tar", a)
    b = []
    for i in range(20):
        b += _sample(f"b{i:03d}", 200 + i)
        b.append((f"b{i:03d}.json", json.dumps({"caption": f"json caption b{i}"}).encode()))
    b += _sample("a010", 300, caption="a010 from the second tar")  # repeated across tars
    write_tar(root / "00001.tar", b)
    keys = [f"b{i:03d}" for i in range(20)]
    parquet = {"key": keys, "status": ["success"] * 20, "caption": [f"parquet caption {k}" for k in keys]}
    parquet["dense_caption"] = [f"a long caption of {k}" for k in keys]
    pq.write_table(pa.table(parquet), root / "00001.parquet")
    c = []
    for i in range(10):
        c += _sample(f"c{i:03d}", 400 + i, caption=f"caption c{i}")
    whole = write_tar(root / "00002.tar", c).read_bytes()
    (root / "00002.tar").write_bytes(whole[: len(whole) // 2])  # cut in the middle
    expected = {"bad": "undecodable_image", "textonly": "no_image", "a005": "duplicate_key"}
    expected["a010"] = "duplicate_key"
    return root, expected


def _config(folder: Path, **overrides) -> DownloadConfig:
    settings = {"shards": str(folder), "samples_per_shard": 16, "resize_mode": "no"}
    settings["extra_columns"] = ("dense_caption",)
    return DownloadConfig(**{**settings, **overrides})


def _outputs(artifact: ArtifactDir) -> list[tuple[str, str, bytes]]:
    shards = Path(artifact.path) / "shards"
    rows = []
    for tar in sorted(shards.glob("*.tar")):
        status = pq.read_table(tar.with_suffix(".parquet")).to_pylist()
        samples = list(iter_samples(artifact.fs, str(tar)))
        assert [s["key"] for s in samples] == [r["key"] for r in status]  # the table is the tar's order
        rows += [(s["key"], s["json"]["source_key"], s["jpg"]) for s in samples]
    return rows


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    folder, expected = _inputs(root / "input")
    artifact = ArtifactDir(str(root / "dl"))
    outcome = run_download(_config(folder), StageContext(artifact, {}))
    return folder, expected, artifact, outcome


def test_every_sample_is_kept_or_rejected_with_its_reason(ingested):
    _, expected, artifact, outcome = ingested
    counts = outcome.counts
    kept = 30 + 2 + 1 + 20  # a*, png, webp, withcls, b*
    assert counts.num_in == counts.num_out + counts.num_rejected
    rejected = pq.read_table(Path(artifact.path) / "rejected.parquet").to_pylist()
    by_key = {r["source_key"]: r["reason"] for r in rejected if r["source_key"]}
    assert by_key == expected
    cut = [r for r in rejected if r["reason"] == "truncated_tar"]
    assert len(cut) == 1 and cut[0]["source_tar"].endswith("00002.tar")
    truncated_kept = counts.num_out - kept  # the samples before the cut are kept
    assert 0 < truncated_kept < 10
    assert counts.rejected_by_reason == {
        "undecodable_image": 1,
        "no_image": 1,
        "duplicate_key": 2,
        "truncated_tar": 1,
    }
    members = pq.read_table(Path(artifact.path) / "rejected_members.parquet").to_pylist()
    assert [(m["source_key"], m["member"], m["reason"]) for m in members] == [
        ("withcls", ".cls2", "unknown_extension")
    ]


def test_shards_are_recut_and_bytes_captions_and_fields_kept(ingested):
    folder, _, artifact, outcome = ingested
    rows = _outputs(artifact)
    keys = [key for key, _, _ in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == outcome.counts.num_out
    tars = sorted((Path(artifact.path) / "shards").glob("*.tar"))
    sizes = [len(list(iter_samples(artifact.fs, str(t)))) for t in tars]
    assert all(size == 16 for size in sizes[:-1]) and 0 < sizes[-1] <= 16
    originals = {}
    for name in ("00000.tar", "00001.tar"):
        for sample in iter_samples(artifact.fs, str(folder / name)):
            originals.setdefault(sample["key"], sample.get("jpg") or sample.get("png") or sample.get("webp"))
    for _, source_key, data in rows:
        if source_key in originals:
            assert data == originals[source_key]  # resize_mode no: the bytes as they were
    status = pq.read_table(tars[0].with_suffix(".parquet")).to_pylist()
    assert status[0]["source_key"] == "a000" and status[0]["caption"] == "caption a0"
    second = {r["source_key"]: r for t in tars for r in pq.read_table(t.with_suffix(".parquet")).to_pylist()}
    assert second["b003"]["caption"] == "parquet caption b003"  # the parquet beside the tar wins
    assert second["b003"]["dense_caption"] == "a long caption of b003"  # extra_columns kept
    assert second["awebp"]["width"] == 28 and second["awebp"]["original_height"] == 20


def test_a_killed_ingest_resumes_to_the_same_shards(ingested, tmp_path, monkeypatch):
    folder, _, artifact, outcome = ingested
    written = []
    real = ingest_module.write_shard

    def dies_after_two(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        real(*args, **kwargs)
        written.append(args[1])

    monkeypatch.setattr("pipelines.download.ingest_run.write_shard", dies_after_two)
    again = ArtifactDir(str(tmp_path / "dl"))
    with pytest.raises(KeyboardInterrupt):
        run_download(_config(folder), StageContext(again, {}))
    monkeypatch.setattr("pipelines.download.ingest_run.write_shard", real)
    resumed = run_download(_config(folder), StageContext(again, {}))
    assert _outputs(again) == _outputs(artifact)
    assert resumed.counts == outcome.counts
    first = pq.read_table(Path(artifact.path) / "rejected.parquet")
    assert pq.read_table(Path(again.path) / "rejected.parquet").equals(first)


def test_a_resize_is_img2dataset_s(ingested, tmp_path):
    folder, _, _, unresized = ingested
    artifact = ArtifactDir(str(tmp_path / "resized"))
    config = _config(folder, resize_mode="keep_ratio", image_size_px=10)
    outcome = run_download(config, StageContext(artifact, {}))
    status = pq.read_table(Path(artifact.path) / "shards" / "00000.parquet").to_pylist()
    assert (status[0]["width"], status[0]["height"]) == (14, 10)  # short side 10, ratio kept
    assert Image.open(io.BytesIO(_outputs(artifact)[0][2])).size == (14, 10)
    assert outcome.counts == unresized.counts


def test_no_tar_under_the_path_is_a_clear_error(tmp_path):
    from ops.errors import BadInputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match=r"names no \.tar file"):
        run_download(_config(tmp_path / "empty"), StageContext(ArtifactDir(str(tmp_path / "dl")), {}))


def test_later_stages_read_the_ingested_layout(ingested):
    """embed's caption reading (the status table, no tar bytes) and finetune_text's pair source see the
    ingested samples as they see a download's."""
    from pipelines.embed.config import EmbedConfig
    from pipelines.embed.embedder import status_table_captions
    from pipelines.finetune_text.config import FinetuneTextConfig
    from pipelines.finetune_text.pairs import image_captions

    _, _, artifact, outcome = ingested
    tars = sorted((Path(artifact.path) / "shards").glob("*.tar"))
    captions = 0
    for tar in tars:
        keys, fields = status_table_captions(
            artifact.fs, str(tar), EmbedConfig(caption_fields=("original",)), None
        )
        in_tar = list(iter_samples(artifact.fs, str(tar)))
        assert keys == [s["key"] for s in in_tar]
        assert fields["original"] == [s.get("txt", b"").decode() or None for s in in_tar]
        captions += len(keys)
    assert captions == outcome.counts.num_out
    config = FinetuneTextConfig(dense_caption_column="dense_caption")
    shards = ArtifactDir(artifact.child_uri("shards"))
    images = [row for table in image_captions(shards, None, config) for row in table.to_pylist()]
    assert len(images) == outcome.counts.num_out
    dense = [row for row in images if row["dense"] is not None]
    assert len(dense) == 20 and all(row["original"].startswith("parquet caption") for row in dense)
