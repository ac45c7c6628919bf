"""Sidecar columns, the reference tar layout, and length-sorted batching."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from ops.embedding_sidecar import field_matrix, reference_tar, sidecar_table
from ops.length_buckets import length_sorted_batches, padded_token_count


def _table(dtype: str = "float16"):
    vectors = {
        "original": [np.full(4, 0.5), None, np.arange(4.0)],
        "dense": [np.ones(4), np.zeros(4), -np.ones(4)],
    }
    truncated = {"original": [False, False, True], "dense": [False, False, False]}
    return sidecar_table(["k0", "k1", "k2"], vectors, truncated, dim=4, dtype=dtype)


def test_absent_rows_are_marked_and_values_round_trip_through_parquet(tmp_path):
    pq.write_table(_table(), tmp_path / "sidecar.parquet")
    table = pq.read_table(tmp_path / "sidecar.parquet")
    assert table.column_names == [
        "key",
        *("original", "original_present", "original_truncated"),
        *("dense", "dense_present", "dense_truncated"),
    ]
    matrix, present = field_matrix(table, "original")
    assert present.tolist() == [True, False, True]
    assert np.allclose(matrix[[0, 2]], [np.full(4, 0.5), np.arange(4.0)]) and not matrix[1].any()
    assert table["original_truncated"].to_pylist() == [False, False, True]
    with pytest.raises(ValueError, match="bfloat16"):
        _table("bfloat16")


def test_reference_tar_has_float32_members_in_key_order_and_skips_missing():
    data = reference_tar(_table(), {"original": "shortsv_captions", "dense": "longsv_captions"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == [
            "k0.shortsv_captions",
            "k0.longsv_captions",
            "k1.longsv_captions",
            "k2.shortsv_captions",
            "k2.longsv_captions",
        ]
        vector = np.frombuffer(tar.extractfile("k2.shortsv_captions").read(), dtype=np.float32)
    assert vector.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_bucketing_cuts_padding_and_keeps_every_index_once():
    lengths = [5, 40, 6, 38, 7, 41, 5, 39]
    plain = length_sorted_batches(lengths, 2, bucketing=False)
    bucketed = length_sorted_batches(lengths, 2, bucketing=True)
    assert sorted(i for b in bucketed for i in b) == list(range(8))
    assert padded_token_count(lengths, bucketed)[0] < padded_token_count(lengths, plain)[0]
    assert padded_token_count([3, 3], [[0, 1]]) == (0, 6)
