"""A run killed while img2dataset wrote a shard's stats file leaves it empty or truncated; the next run
redoes that shard instead of skipping it and failing on its stats."""

from __future__ import annotations

import json

from ops.artifact_dir import ArtifactDir
from ops.loopback_http import LoopbackFileServer
from ops.stage import StageContext
from pipelines.download.stage import run_download
from tests.pipelines.download.test_download import _config, _samples, _url_table, _write_corpus


def test_half_written_stats_are_redone_not_skipped(tmp_path):
    paths = _write_corpus(tmp_path / "corpus", 12)[:12]
    artifact = ArtifactDir(str(tmp_path / "dl"))
    with LoopbackFileServer(str(tmp_path / "corpus")) as server:
        config = _config(_url_table(server, paths, tmp_path / "urls.parquet"), samples_per_shard=4)
        first = run_download(config, StageContext(artifact, {}))
        assert first.counts.num_out == 12
        shards = tmp_path / "dl" / "shards"
        full = (shards / "00001_stats.json").read_text()
        (shards / "00001_stats.json").write_text(full[: len(full) // 2])  # killed mid-write
        (shards / "00002_stats.json").write_text("")  # killed before the first byte
        fetched_before = dict(server.requests)

        second = run_download(config, StageContext(artifact, {}))

    assert (second.counts.num_in, second.counts.num_out, second.counts.num_rejected) == (12, 12, 0)
    assert second.metrics["num_shards_resumed"] == 1.0  # shard 0 only
    assert json.loads((shards / "00001_stats.json").read_text())["successes"] == 4
    urls = sorted(json.loads(s["json"])["url"] for s in _samples(shards).values())
    assert urls == sorted(server.url_for(p) for p in paths)  # each row once: no gap, no duplicate
    refetched = {path for path, n in server.requests.items() if n > fetched_before.get(path, 0)}
    assert refetched == set(paths[4:12])  # shards 1 and 2 downloaded again, shard 0 not
