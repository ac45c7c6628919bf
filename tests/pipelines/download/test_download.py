"""The download stage with real img2dataset against a loopback server."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
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
from testbed.waiting import processes_matching, wait_until
from tests.conftest import REPO_ROOT

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


def test_bad_table_fails_before_any_download(tmp_path):
    table = tmp_path / "urls.csv"
    table.write_text("link,text\nhttp://127.0.0.1:9/a.jpg,a\n")
    artifact = ArtifactDir(str(tmp_path / "dl"))
    with pytest.raises(UrlTableError, match=r"urls.csv: no column 'url'.*its columns are: link, text"):
        run_download(_config(table, extra_columns=()), StageContext(artifact, {}))
    assert not (tmp_path / "dl" / "shards").exists()


def _recipe(path: Path, url_list: Path) -> Path:
    path.write_text(
        "name: kill-test\nray: {num_cpus: 2}\ndownload:\n"
        f"  url_list: {url_list}\n  image_size_px: 32\n  samples_per_shard: 4\n"
        "  processes_count: 1\n  thread_count: 1\n  timeout_s: 10\n"
    )
    return path


def _workflow(recipe: Path, root: Path, ray_address: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_address  # the driver joins the suite's cluster, as a submitted job would
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "workflows/full.py"),
            "--config",
            str(recipe),
            "--artifacts",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # so the kill takes img2dataset's worker processes too
    )


@pytest.mark.slow
@pytest.mark.reliability
def test_killed_download_resumes_without_duplicates_or_gaps(tmp_path, ray_cluster, record_property):
    corpus_dir = tmp_path / "corpus"
    paths = _write_corpus(corpus_dir, 24)[:24]
    with LoopbackFileServer(str(corpus_dir), delay_s=0.15) as server:
        recipe = _recipe(tmp_path / "recipe.yaml", _url_table(server, paths, tmp_path / "urls.parquet"))
        root = tmp_path / "artifacts"
        first = _workflow(recipe, root, ray_cluster.address)
        deadline = time.monotonic() + 240
        while not list(root.glob("download/*/shards/*_stats.json")):
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        (stage_dir,) = [p for p in root.glob("download/*") if p.is_dir()]
        done_before = _finished_shards(stage_dir / "shards")
        assert not (stage_dir / "manifest.json").exists()
        assert len(done_before) < 6

        second = _workflow(recipe, root, ray_cluster.address)
        output = second.communicate(timeout=300)[0]
        assert second.returncode == 0, output[-3000:]
        assert f"resuming: {len(done_before)} of 6 shards already complete" in output

        manifest = json.loads((stage_dir / "manifest.json").read_text())
        assert manifest["counts"]["num_in"] == manifest["counts"]["num_out"] == 24
        samples = _samples(stage_dir / "shards")
        urls = sorted(json.loads(s["json"])["url"] for s in samples.values())
        assert urls == sorted(server.url_for(p) for p in paths)  # every row once: no gap, no duplicate
        for shard in done_before:  # finished shards were not fetched again
            shard_rows = (
                pq.read_table(stage_dir / "shards" / f"{shard:05d}.parquet").column("url").to_pylist()
            )
            assert all(server.requests[url.split("/", 3)[-1]] == 1 for url in shard_rows)
        record_property(
            "got",
            f"driver killed after {len(done_before)} of 6 shards; resumed, 24 rows once each, none refetched",
        )


def _finished_shards(shards: Path) -> list[int]:
    """Shards whose stats file img2dataset finished writing (the kill may land in the middle of one,
    which the resumed run redoes)."""
    finished = []
    for path in shards.glob("*_stats.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            continue
        finished.append(int(path.name.split("_")[0]))
    return sorted(finished)


def _download_while(kill, corpus_dir: Path, paths: list[str], tmp_path: Path, **overrides):
    """The download stage on a slow loopback server (shards of 4, one thread) while `kill` runs beside
    it in a thread; returns (outcome, server)."""
    with LoopbackFileServer(str(corpus_dir), delay_s=0.2) as server:
        url_list = _url_table(server, paths, tmp_path / "urls.parquet")
        killer = threading.Thread(target=kill, args=(server,), daemon=True)
        killer.start()
        config = _config(url_list, samples_per_shard=4, thread_count=1, **overrides)
        outcome = run_download(config, StageContext(ArtifactDir(str(tmp_path / "dl")), {}))
        killer.join(timeout=10)
    return outcome, server


def _assert_every_row_once(outcome, tmp_path: Path, server, paths: list[str], killed: list[int]) -> None:
    assert len(killed) == 1
    assert (outcome.counts.num_in, outcome.counts.num_out, outcome.counts.num_rejected) == (12, 12, 0)
    urls = sorted(json.loads(s["json"])["url"] for s in _samples(tmp_path / "dl" / "shards").values())
    assert urls == sorted(server.url_for(p) for p in paths)  # each row once: no gap, no duplicate


@pytest.mark.reliability
def test_ray_distributor_survives_a_killed_worker(tmp_path, ray_session, record_property):
    """SIGKILL the Ray worker running one of img2dataset's shard tasks: Ray retries the task and the
    shard is written whole, once."""
    corpus_dir = tmp_path / "corpus"
    paths = _write_corpus(corpus_dir, 12)[:12]
    killed: list[int] = []

    def kill_a_download_task(server) -> None:
        # Mid-shard: a shard task runs and the slow server has answered some of its requests.
        (task, *_) = wait_until(
            lambda: sum(server.requests.values()) >= 1 and processes_matching("ray_download"),
            120,
            "a ray_download task with a response in",
            poll_s=0.02,
        )
        task.kill()
        killed.append(task.pid)

    outcome, server = _download_while(kill_a_download_task, corpus_dir, paths, tmp_path, distributor="ray")
    _assert_every_row_once(outcome, tmp_path, server, paths, killed)
    refetched = sum(n - 1 for n in server.requests.values())
    record_property(
        "got",
        f"a Ray worker killed mid-shard; Ray retried the task: 12 of 12 once ({refetched} urls refetched)",
    )


@pytest.mark.reliability
def test_multiprocessing_distributor_survives_a_killed_worker_process(tmp_path, record_property):
    """img2dataset's own Pool waits forever for the shard of a dead worker; the stage's distributor
    retries that shard in a fresh pool."""
    corpus_dir = tmp_path / "corpus"
    paths = _write_corpus(corpus_dir, 12)[:12]
    killed: list[int] = []

    def kill_a_pool_worker(server) -> None:
        me = psutil.Process()

        def pool_workers_with_responses_in() -> list[psutil.Process]:
            # The pool's workers are forked by multiprocessing's forkserver, a child of this process
            # (img2dataset's logger process is a spawned child of its own).
            forkservers = [c for c in me.children() if "forkserver" in " ".join(c.cmdline())]
            workers = [worker for forkserver in forkservers for worker in forkserver.children()]
            return workers if len(workers) == 2 and sum(server.requests.values()) >= 2 else []

        # Mid-shard: both pool workers run and the slow server has answered some of their requests.
        workers = wait_until(pool_workers_with_responses_in, 120, "two pool workers with responses in", 0.02)
        workers[-1].kill()
        killed.append(workers[-1].pid)

    outcome, server = _download_while(kill_a_pool_worker, corpus_dir, paths, tmp_path, processes_count=2)
    _assert_every_row_once(outcome, tmp_path, server, paths, killed)
    record_property(
        "got", "a download worker process killed mid-shard; its shard retried in a new pool: 12 of 12 once"
    )
