"""Url screening with pyarrow compute, batch by batch: the same verdicts as urllib's parser on awkward
urls, and a duplicate found across batches as within one, with row numbers of the whole table."""

from __future__ import annotations

from urllib.parse import urlsplit

import pyarrow as pa

from ops.url_table import UrlScreen, iter_url_table, screen_urls

AWKWARD = [
    "http://example.com/a.jpg",
    "HTTPS://Example.com",
    "https://user:pw@host.org:8080/x?y#z",
    "http://[2001:db8::1]/img.png",
    "  http://padded.com/x.jpg  ",
    "http://",
    "http:///nohost.jpg",
    "https://:80/x",
    "ftp://example.com/a.jpg",
    "file:///etc/passwd",
    "example.com/a.jpg",
    "",
    None,
    "javascript:alert(1)",
    "http://host?q=1",
]


def _urlsplit_valid(url: str | None) -> bool:
    parts = urlsplit((url or "").strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def test_validity_matches_urlsplit_on_awkward_urls():
    table = pa.table({"url": pa.array(AWKWARD, pa.string())})
    kept, rejected = screen_urls(table, "url")
    assert kept["url"].to_pylist() == [u for u in AWKWARD if _urlsplit_valid(u)]
    assert set(rejected["reason"].to_pylist()) == {"bad_url"}
    assert rejected["row"].to_pylist() == [i for i, u in enumerate(AWKWARD) if not _urlsplit_valid(u)]


def test_duplicates_are_found_across_batches_with_whole_table_row_numbers(tmp_path):
    urls = [f"http://h/{i % 700}.jpg" for i in range(1000)] + ["bad"] * 5
    path = tmp_path / "urls.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": urls, "caption": [str(i) for i in range(len(urls))]}), path)
    screen = UrlScreen("url")
    kept, rejected = [], []
    for batch in iter_url_table(
        str(path), input_format="auto", url_col="url", caption_col="caption", batch_rows=128
    ):
        good, bad = screen.screen(batch)
        kept.append(good)
        rejected.append(bad)
    kept, rejected = pa.concat_tables(kept), pa.concat_tables(rejected)
    assert kept["url"].to_pylist() == urls[:700]  # each url's first row keeps it
    assert kept.num_rows + rejected.num_rows == len(urls)
    reasons = dict(zip(rejected["row"].to_pylist(), rejected["reason"].to_pylist()))
    assert reasons == {
        **dict.fromkeys(range(700, 1000), "duplicate_url"),
        **dict.fromkeys(range(1000, 1005), "bad_url"),
    }
    whole_kept, whole_rejected = screen_urls(pq.read_table(path), "url")
    assert whole_kept.equals(kept) and whole_rejected["row"].equals(rejected["row"])
