from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.url_table import UrlTableError, read_url_table

ROWS = [{"url": f"http://h/{i}.jpg", "caption": f"cap {i}", "recap": f"long {i}"} for i in range(5)]


def _read(path, **kwargs):
    options = {"input_format": "auto", "url_col": "url", "caption_col": "caption"}
    return read_url_table(str(path), **{**options, **kwargs})


def test_reads_every_format_with_the_same_rows(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text(
        "url,caption,recap\n" + "".join(f"{r['url']},{r['caption']},{r['recap']}\n" for r in ROWS)
    )
    (tmp_path / "t.jsonl").write_text(
        "".join(
            f'{{"url": "{r["url"]}", "caption": "{r["caption"]}", "recap": "{r["recap"]}"}}\n' for r in ROWS
        )
    )
    # CC3M style: tab-separated, no header, caption first.
    (tmp_path / "t.tsv").write_text("".join(f"{r['caption']}\t{r['url']}\n" for r in ROWS))
    for name in ("t.parquet", "t.csv", "t.jsonl"):
        table = _read(tmp_path / name, extra_columns=("recap",))
        assert table.to_pylist() == ROWS, name
    tsv = _read(tmp_path / "t.tsv", column_names=("caption", "url"))
    assert tsv.column("url").to_pylist() == [r["url"] for r in ROWS]


def test_subset_and_folder_of_files(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[:3]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[3:]), folder / "b.parquet")
    assert _read(folder).num_rows == 5
    assert _read(folder, num_samples=4).column("url").to_pylist() == [r["url"] for r in ROWS[:4]]


def test_numeric_looking_captions_stay_strings(tmp_path):
    (tmp_path / "n.csv").write_text("url,caption\nhttp://h/1.jpg,2024\n")
    assert _read(tmp_path / "n.csv").column("caption").to_pylist() == ["2024"]


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (
            lambda p: pq.write_table(pa.Table.from_pylist(ROWS), p / "t.parquet"),
            {"url_col": "URL"},
            "t.parquet: no column 'URL'",
        ),
        (
            lambda p: pq.write_table(pa.Table.from_pylist(ROWS), p / "t.parquet"),
            {"extra_columns": ("re_caption",)},
            "no column 're_caption'",
        ),
        (
            lambda p: pq.write_table(pa.Table.from_pylist(ROWS).slice(0, 0), p / "t.parquet"),
            {},
            "the url table has no rows",
        ),
        (
            lambda p: (p / "t.parquet").write_bytes(b"definitely not parquet"),
            {},
            "t.parquet: cannot read as parquet",
        ),
        (lambda p: None, {}, "url table not found"),
        (lambda p: (p / "t.txt").write_text("x"), {}, "cannot tell the format"),
    ],
)
def test_bad_tables_fail_naming_file_and_column(tmp_path, setup, kwargs, message):
    setup(tmp_path)
    names = [p.name for p in tmp_path.iterdir()]
    target = tmp_path / (names[0] if names else "missing.parquet")
    with pytest.raises(UrlTableError) as err:
        _read(target, **kwargs)
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)
