"""The bad-input corpus through the real code: each case ends in a clear error naming the file, row or
field, or in a counted rejection with a reason; counts reconcile and nothing hangs."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from ops.artifact_dir import ArtifactDir
from ops.config_schema import ConfigError
from ops.embedding_sidecar import SidecarError, check_sidecar_schema
from ops.image_decode import ImageDecodeError, decode_rgb
from ops.loopback_http import LoopbackFileServer
from ops.stage import StageContext
from ops.url_table import UrlTableError
from ops.webdataset_io import ShardReadError, count_samples, iter_samples
from pipelines.download.config import DownloadConfig
from pipelines.download.stage import run_download
from pipelines.embed.config import EmbedConfig
from pipelines.embed.embedder import shard_captions
from pipelines.recaption.config import RecaptionConfig
from pipelines.recaption.shards import ShardRows, classify
from pipelines.train_vision.data import joined_samples
from tests.reliability import corpus
from workflows.recipe import load_recipe
from workflows.registry import CHAIN

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]
LOCAL = fsspec.filesystem("file")
IMAGES = corpus.bad_images()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_decoder(name, got):
    data, expected = IMAGES[name]
    if expected == "rgb":
        image = decode_rgb(data)
        assert image.mode == "RGB" and image.size == (48, 40)
        if name != "grayscale_png" and name != "16bit_png":  # colour survives the conversion
            error = np.abs(np.asarray(image, np.float32) - corpus.reference_rgb()).mean()
            assert error < 12, error
        got(f"decoded to RGB {image.size[0]}x{image.size[1]}")
        return
    with pytest.raises(ImageDecodeError) as err:
        decode_rgb(data)
    assert err.value.reason == expected and str(err.value)
    got(f"rejected: {err.value.reason} ({err.value})")


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """One img2dataset run over loopback on the url-table corpus plus every bad image."""
    root = tmp_path_factory.mktemp("bad_download")
    (root / "files").mkdir()
    for name, (data, _) in IMAGES.items():
        (root / "files" / f"{name}.img").write_bytes(data)
    for name in ("good", "unicode", "long", "empty_caption"):
        (root / "files" / f"{name}.jpg").write_bytes(IMAGES["cmyk_jpeg"][0])
    with LoopbackFileServer(str(root / "files")) as server:
        rows = corpus.url_rows(server.url_for)
        for name, (_, expected) in IMAGES.items():
            # img2dataset re-encodes: what PIL turns into RGB, it does too; the rest fails to resize.
            status = "success" if expected == "rgb" else "failed_to_resize"
            rows.append({"url": server.url_for(f"{name}.img"), "caption": name, "expect": status})
        table = corpus.write_url_table(root / "urls.parquet", rows, extra=True)
        config = DownloadConfig(
            url_list=str(table),
            image_size_px=32,
            samples_per_shard=8,
            processes_count=1,
            thread_count=4,
            timeout_s=5,
            max_image_area_px=4000 * 4000,
        )
        outcome = run_download(config, StageContext(ArtifactDir(str(root / "dl")), {}))
    return rows, outcome, root / "dl"


def _shard_samples(shards: Path) -> list[dict]:
    return [s for tar in sorted(shards.glob("*.tar")) for s in iter_samples(LOCAL, str(tar))]


def test_download_accounts_for_every_bad_row(downloaded, got):
    rows, outcome, out = downloaded
    counts = outcome.counts
    assert counts.num_in == len(rows) == counts.num_out + counts.num_rejected
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    by_url = {r["url"]: r["reason"] for r in rejected}
    assert len(by_url) == len(rejected)  # each url rejected once (the duplicate's first row succeeded)
    expected = {}
    for row in rows:
        if row["expect"] != "success":
            expected[row["url"]] = row["expect"]
    assert by_url == expected
    assert all(r["error_message"] for r in rejected)
    assert (
        counts.num_out == sum(r["expect"] == "success" for r in rows) == len(_shard_samples(out / "shards"))
    )
    reasons = dict(sorted(counts.rejected_by_reason.items()))
    got(f"{counts.num_in} rows: {counts.num_out} samples, rejected {reasons}")


@pytest.mark.parametrize("caption", ["unicode.jpg", "long.jpg", "empty_caption.jpg"])
def test_odd_captions_survive_download_byte_for_byte(downloaded, caption, got):
    rows, _, out = downloaded
    (row,) = [r for r in rows if r["url"].endswith("/" + caption)]
    (sample,) = [s for s in _shard_samples(out / "shards") if s["json"]["url"] == row["url"]]
    assert sample["txt"].decode("utf-8") == row["caption"] == sample["json"]["caption"]
    got(f"kept: {len(row['caption'])} characters, identical in txt and json")


def test_empty_caption_is_a_counted_rejection_at_embed(downloaded, got):
    _, _, out = downloaded
    config = EmbedConfig(caption_fields=("original",))
    keys, fields, empty = [], [], []
    for tar in sorted((out / "shards").glob("*.tar")):
        shard_keys, shard_fields = shard_captions(LOCAL, str(tar), config, None, [])
        keys += shard_keys
        fields += shard_fields["original"]
    empty = [k for k, text in zip(keys, fields) if text is None]
    assert len(empty) == 1 and len(keys) == len(set(keys))
    got(f"embed: {len(empty)} of {len(keys)} samples rejected as missing_original (sidecar row kept, zeros)")


def test_url_table_missing_a_column_fails_naming_file_and_column(tmp_path, got):
    table = corpus.write_url_table(tmp_path / "urls.parquet", corpus.url_rows(str), drop=("caption",))
    config = DownloadConfig(url_list=str(table))
    with pytest.raises(UrlTableError, match=r"urls.parquet: no column 'caption'.*its columns are: url"):
        run_download(config, StageContext(ArtifactDir(str(tmp_path / "dl")), {}))
    assert not (tmp_path / "dl" / "shards").exists()
    got(f"error before any download: no column 'caption' (file {table.name})")


@pytest.mark.parametrize("where", ["mid_member", "between_members"])
def test_truncated_shard_fails_naming_the_shard(tmp_path, where, got):
    keys = [f"k{i}" for i in range(6)]
    shard = corpus.truncated_shard(tmp_path / "00007.tar", keys, between_members=where == "between_members")
    with pytest.raises(ShardReadError, match=r"00007.tar: truncated or corrupt tar after \d samples"):
        list(iter_samples(LOCAL, str(shard)))
    with pytest.raises(ShardReadError, match=r"00007\.tar"):
        count_samples(LOCAL, str(shard))
    with pytest.raises(ShardReadError) as err:  # the stages' own readers say the same
        ShardRows(str(tmp_path))({"tar_path": str(shard)})
    got(f"error: {err.value}")


def test_repeated_keys_keep_the_first_and_are_counted_everywhere(tmp_path, got):
    shard = corpus.repeated_key_shard(tmp_path / "00000.tar")
    duplicates: list[str] = []
    samples = list(iter_samples(LOCAL, str(shard), duplicates))
    assert [s["key"] for s in samples] == ["k1", "k2", "k3"] and duplicates == ["k1", "k3"]
    assert samples[0]["txt"] == b"first k1"
    assert count_samples(LOCAL, str(shard)) == 5  # every image member is an input

    rows = ShardRows(str(tmp_path))({"tar_path": str(shard)})
    reasons = [classify({**r, "decode_error": r["input_error"]}, RecaptionConfig())[0] for r in rows]
    assert len(rows) == 5 and reasons.count("duplicate_key") == 2

    embed_dups: list[str] = []
    keys, _ = shard_captions(LOCAL, str(shard), EmbedConfig(), None, embed_dups)
    assert keys == ["k1", "k2", "k3"] and embed_dups == ["k1", "k3"]
    sidecar = corpus.sidecar(tmp_path / "00000.parquet", keys, dim=8)
    assert [s.key for s in joined_samples(str(shard), str(sidecar))] == keys
    got("first occurrence kept; recaption and embed reject 2 as duplicate_key (5 in = 3 out + 2 rejected)")


def test_corrupt_json_member_fails_naming_shard_and_member(tmp_path, got):
    shard = corpus.bad_json_shard(tmp_path / "00003.tar")
    with pytest.raises(ShardReadError, match=r"00003.tar: member k2.json: not valid JSON") as err:
        list(iter_samples(LOCAL, str(shard)))
    got(f"error: {err.value}")


def test_sidecar_missing_a_key_fails_naming_sidecar_and_key(tmp_path, got):
    shard = corpus.good_shard(tmp_path / "00000.tar", ["a", "b", "c"])
    sidecar = corpus.sidecar(tmp_path / "00000.parquet", ["a", "c"], dim=8)
    with pytest.raises(
        ValueError, match=r"00000.parquet: row 1 is 'c' but .*00000.tar has sample 'b'"
    ) as err:
        list(joined_samples(str(shard), str(sidecar)))
    got(f"error: {str(err.value).split(';')[0]}")


def test_sidecar_of_the_wrong_dimension_fails_before_training(tmp_path, got):
    sidecar = corpus.sidecar(tmp_path / "00000.parquet", ["a", "b"], dim=8)
    check_sidecar_schema(str(sidecar), 8)
    with pytest.raises(
        SidecarError, match=r"00000.parquet: column 'original' holds 8-dim vectors, expected 16"
    ):
        check_sidecar_schema(str(sidecar), 16)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SidecarError, match=r"junk\.parquet: not a readable parquet sidecar"):
        check_sidecar_schema(str(tmp_path / "junk.parquet"), 8)
    got("error: column 'original' holds 8-dim vectors, expected 16")


CONFIG_CASES = {
    "unknown_key": (("embed.batch_sise=3",), "embed.batch_sise: unknown key"),
    "unknown_section": (("evaluation.batch_size=3",), "evaluation: unknown key"),
    "wrong_type": (("train_vision.max_steps=ten",), "train_vision.max_steps: expected an integer, got 'ten'"),
    "wrong_nested_type": (("tiny_models.llm=3",), "tiny_models.llm: expected a mapping"),
    "negative_size": (("download.samples_per_shard=-5",), "download.samples_per_shard: expected"),
    "negative_batch": (("finetune_text.batch_size_per_worker=-1",), "finetune_text.batch_size_per_worker:"),
    "missing_llm_path": (
        ("finetune_text.base_model=/nonexistent/llm",),
        "finetune_text.base_model: expected an existing local model folder",
    ),
    "missing_encoder_path": (
        ("embed.encoder=./no/such/encoder",),
        "embed.encoder: expected an existing local",
    ),
    "missing_vlm_path": (("recaption.model=/no/such/vlm",), "recaption.model: expected an existing local"),
    "missing_vision_path": (
        ("train_vision.vision_model=/no/vit",),
        "train_vision.vision_model: expected an existing",
    ),
    "missing_export_path": (("evaluate.model=/no/export",), "evaluate.model: expected an existing local"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_configs_name_file_and_field(case, got):
    overrides, message = CONFIG_CASES[case]
    with pytest.raises(ConfigError) as err:
        load_recipe(REPO / "configs/demo.yaml", CHAIN, overrides)
    assert message in str(err.value) and "configs/demo.yaml" in str(err.value), str(err.value)
    got(f"error: {err.value}")


def test_hugging_face_ids_are_not_mistaken_for_missing_paths():
    recipe = load_recipe(
        REPO / "configs/demo.yaml",
        CHAIN,
        ("finetune_text.base_model=meta-llama/Llama-3.2-1B", "recaption.model=gpt2"),
    )
    assert recipe.stages["finetune_text"].base_model == "meta-llama/Llama-3.2-1B"
