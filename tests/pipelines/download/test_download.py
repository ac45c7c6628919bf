"""The download stage with real img2dataset against a loopback server."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from demo import basic_scenes as scenes
from ops.artifact_dir import ArtifactDir
from ops.loopback_http import LoopbackFileServer
from ops.stage import StageContext
from ops.url_table import UrlTableError
from pipelines.download.config import DownloadConfig, UrlSource
from pipelines.download.stage import run_download

NUM_GOOD = 10


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_corpus(folder: Path, num_good: int) -> list[str]:
    """Good scene images plus the planted failures; returns the relative paths, good ones first."""
    (folder / "images").mkdir(parents=True)
    paths = []
    for i in range(num_good):
        scene = scenes.sample_scene(random.Random(i), f"s{i}", max_objects=3)
        (folder / f"images/good_{i}.jpg").write_bytes(_jpeg(scenes.render_scene(scene, 96)))
        paths.append(f"images/good_{i}.jpg")
    (folder / "images/corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (folder / "images/big.jpg").write_bytes(_jpeg(Image.new("RGB", (400, 400), (10, 200, 10))))
    (folder / "images/optout.jpg").write_bytes(_jpeg(Image.new("RGB", (64, 64), (200, 10, 10))))
    return [*paths, "images/corrupt.jpg", "images/big.jpg", "images/optout.jpg", "images/missing.jpg"]


def _url_table(server: LoopbackFileServer, paths: list[str], out: Path) -> Path:
    rows = [
        {"url": server.url_for(p), "caption": f"caption of {p}", "note": f"note {i}"}
        for i, p in enumerate(paths)
    ]
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out


def _samples(shards: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext not in samples[key], f"{member.name} twice"
                samples[key][ext] = tar.extractfile(member).read()
    return samples


def _assert_in_key_order(shards: Path) -> None:
    """Each shard's tar members and status rows in key order (not the order downloads finished in)."""
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            keys = [member.name.split(".", 1)[0] for member in tar.getmembers()]
        assert keys == sorted(keys), tar_path
        status_keys = pq.read_table(tar_path.with_suffix(".parquet")).column("key").to_pylist()
        assert status_keys == sorted(status_keys), tar_path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = _write_corpus(folder, NUM_GOOD)
    headers = {"images/optout.jpg": {"X-Robots-Tag": "noai, noimageai"}}
    with LoopbackFileServer(str(folder), extra_headers=headers) as server:
        yield server, _url_table(server, paths, folder / "urls.parquet")


def _config(url_list: Path | str, **overrides) -> DownloadConfig:
    base = {
        "url_list": str(url_list),
        "extra_columns": ("note",),
        "image_size_px": 32,
        "samples_per_shard": 5,
        "processes_count": 1,
        "thread_count": 4,
        "timeout_s": 5,
        "max_image_area_px": 200 * 200,
    }
    return DownloadConfig(**{**base, **overrides})


def test_failures_are_counted_kept_and_never_fatal(corpus, tmp_path):
    _, url_list = corpus
    artifact = ArtifactDir(str(tmp_path / "dl"))
    outcome = run_download(_config(url_list), StageContext(artifact=artifact, inputs={}))
    counts = outcome.counts
    assert (counts.num_in, counts.num_out, counts.num_rejected) == (NUM_GOOD + 4, NUM_GOOD, 4)
    assert counts.rejected_by_reason == {"failed_to_download": 1, "failed_to_resize": 2, "opted_out": 1}
    assert outcome.metrics["num_shards"] == 3 and outcome.metrics["success_rate"] == NUM_GOOD / (NUM_GOOD + 4)
    shards = outcome.details["shards"]
    assert [s["shard"] for s in shards] == [0, 1, 2] and sum(s["count"] for s in shards) == NUM_GOOD + 4
    assert sum(s["failed_to_download"] + s["failed_to_resize"] for s in shards) == 4

    rejected = pq.read_table(tmp_path / "dl" / "rejected.parquet").to_pylist()
    by_file = {row["url"].rsplit("/", 1)[-1]: row["reason"] for row in rejected}
    assert by_file == {
        "missing.jpg": "failed_to_download",
        "corrupt.jpg": "failed_to_resize",
        "big.jpg": "failed_to_resize",
        "optout.jpg": "opted_out",
    }
    assert all(row["error_message"] for row in rejected)

    samples = _samples(tmp_path / "dl" / "shards")
    assert len(samples) == NUM_GOOD
    for key, parts in samples.items():
        assert set(parts) == {"jpg", "txt", "json"}, key
        meta = json.loads(parts["json"])
        assert meta["key"] == key and meta["status"] == "success"
        assert parts["txt"].decode() == meta["caption"] == f"caption of {meta['url'].split('/', 3)[-1]}"
        assert meta["note"].startswith("note ")
        assert Image.open(io.BytesIO(parts["jpg"])).size == (32, 32)
    _assert_in_key_order(tmp_path / "dl" / "shards")


def test_several_sources_with_their_own_formats_become_one_dataset(corpus, tmp_path):
    """CC3M (tsv, no header, caption then url) + CC12M (url then caption) in one download."""
    server, _ = corpus
    good = [f"images/good_{i}.jpg" for i in range(NUM_GOOD)]
    first, second = good[:4], [*good[4:], "images/missing.jpg"]
    (tmp_path / "a.tsv").write_text("".join(f"first {p}\t{server.url_for(p)}\n" for p in first))
    (tmp_path / "b.tsv").write_text("".join(f"{server.url_for(p)}\tsecond {p}\n" for p in second))
    sources = (
        UrlSource(name="cc3m", url_list=str(tmp_path / "a.tsv"), column_names=("caption", "url")),
        UrlSource(
            name="cc12m", url_list=str(tmp_path / "b.tsv"), column_names=("url", "text"), caption_col="text"
        ),
    )
    config = _config("", sources=sources, extra_columns=())
    outcome = run_download(config, StageContext(artifact=ArtifactDir(str(tmp_path / "dl")), inputs={}))

    counts = outcome.counts
    assert (counts.num_in, counts.num_out, counts.num_rejected) == (NUM_GOOD + 1, NUM_GOOD, 1)
    metas = [json.loads(parts["json"]) for parts in _samples(tmp_path / "dl" / "shards").values()]
    by_source = defaultdict(list)
    for meta in metas:
        by_source[meta["source"]].append(meta["caption"].split(" ", 1))
    assert sorted(p for word, p in by_source["cc3m"]) == sorted(first) and {
        w for w, _ in by_source["cc3m"]
    } == {"first"}
    assert sorted(p for word, p in by_source["cc12m"]) == sorted(good[4:])
    assert {w for w, _ in by_source["cc12m"]} == {"second"}
    rejected = pq.read_table(tmp_path / "dl" / "rejected.parquet").to_pylist()
    assert [r["url"].rsplit("/", 1)[-1] for r in rejected] == ["missing.jpg"]


def test_opt_out_can_be_switched_off_explicitly(corpus, tmp_path):
    _, url_list = corpus
    artifact = ArtifactDir(str(tmp_path / "dl"))
    outcome = run_download(_config(url_list, disallowed_header_directives=()), StageContext(artifact, {}))
    assert "opted_out" not in outcome.counts.rejected_by_reason
    assert outcome.counts.num_out == NUM_GOOD + 1


def test_ray_distributor_gives_the_same_result(corpus, tmp_path, ray_session):
    _, url_list = corpus
    artifact = ArtifactDir(str(tmp_path / "dl"))
    outcome = run_download(_config(url_list, distributor="ray"), StageContext(artifact, {}))
    assert (outcome.counts.num_out, outcome.counts.num_rejected) == (NUM_GOOD, 4)
    assert len(_samples(tmp_path / "dl" / "shards")) == NUM_GOOD
    _assert_in_key_order(tmp_path / "dl" / "shards")


def test_bad_table_fails_before_any_download(tmp_path):
    table = tmp_path / "urls.csv"
    table.write_text("link,text\nhttp://127.0.0.1:9/a.jpg,a\n")
    artifact = ArtifactDir(str(tmp_path / "dl"))
    with pytest.raises(UrlTableError, match=r"urls.csv: no column 'url'.*its columns are: link, text"):
        run_download(_config(table, extra_columns=()), StageContext(artifact, {}))
    assert not (tmp_path / "dl" / "shards").exists()
