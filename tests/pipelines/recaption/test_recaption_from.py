"""recaption.from: a caption folder written for the same shards (as the standalone recaption CLI writes
it) becomes the recaption stage's output without a VLM; one made for other shards, or missing a shard,
is refused with the folder and shard named."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.artifact_dir import ArtifactDir
from ops.config_schema import build_config
from ops.stage import StageContext
from pipelines.recaption.config import RecaptionConfig
from pipelines.recaption.shards import write_shard
from pipelines.recaption.stage import run_recaption
from tests.reliability.corpus import sample_members, write_tar

CAPTION = "a small red cube sits on a wooden table beside a blue sphere near the window in daylight"


def _download(root) -> ArtifactDir:
    artifact = ArtifactDir(str(root / "download"))
    for shard in range(2):
        keys = [f"{shard:05d}{i:04d}" for i in range(4)]
        members = [m for key in keys for m in sample_members(key, f"alt {key}")]
        (root / "download" / "shards").mkdir(parents=True, exist_ok=True)
        write_tar(root / "download" / "shards" / f"{shard:05d}.tar", members)
        status = pa.table({"key": keys, "status": ["success"] * 4, "caption": [f"alt {k}" for k in keys]})
        pq.write_table(status, root / "download" / "shards" / f"{shard:05d}.parquet")
    return artifact


def _captions(root, shards: range, key_prefix: str = "") -> ArtifactDir:
    folder = ArtifactDir(str(root / "captions-run"))
    config = RecaptionConfig()
    for shard in shards:
        rows = [
            {
                "key": f"{key_prefix}{shard:05d}{i:04d}",
                "generated_text": f"{CAPTION} number {i}",
                "original_caption": "alt",
                "num_input_tokens": 10,
                "num_generated_tokens": 20,
                "time_taken_llm": 0.1,
            }
            for i in range(4)
        ]
        write_shard(folder, f"{shard:05d}", rows, config, "some/vlm")
    return folder


def test_a_caption_folder_becomes_the_stages_output(tmp_path):
    download = _download(tmp_path)
    folder = _captions(tmp_path, range(2))
    config = build_config(RecaptionConfig, {"from": folder.uri}, "recaption")
    assert config.from_ == folder.uri
    out = ArtifactDir(str(tmp_path / "recaption"))
    outcome = run_recaption(config, StageContext(out, {"download": download}))
    assert (outcome.counts.num_in, outcome.counts.num_out) == (8, 8)
    captions = pq.read_table(out.child_path("captions/00001.parquet"))
    assert captions["caption"].to_pylist()[0].startswith(CAPTION)


def test_captions_for_other_shards_or_missing_ones_are_refused(tmp_path):
    download = _download(tmp_path)
    partial = _captions(tmp_path, range(1))
    config = RecaptionConfig(from_=partial.uri)
    with pytest.raises(FileNotFoundError, match=r"no finished captions for shards \['00001'\]"):
        run_recaption(config, StageContext(ArtifactDir(str(tmp_path / "a")), {"download": download}))
    (tmp_path / "other").mkdir()
    strangers = _captions(tmp_path / "other", range(2), key_prefix="x")
    with pytest.raises(ValueError, match="made for other shards"):
        run_recaption(
            RecaptionConfig(from_=strangers.uri),
            StageContext(ArtifactDir(str(tmp_path / "b")), {"download": download}),
        )
