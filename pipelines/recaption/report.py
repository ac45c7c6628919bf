"""samples.html: thumbnails beside their original and generated captions, for a look in the MLflow UI."""

from __future__ import annotations

import base64
import html
import io

import fsspec
import pyarrow.parquet as pq
from PIL import Image

from ops.artifact_dir import ArtifactDir
from ops.webdataset_io import iter_samples, list_shards, shard_id_of

THUMBNAIL_PX = 128


def _thumbnail(jpg: bytes) -> str:
    try:
        image = Image.open(io.BytesIO(jpg)).convert("RGB")
    except Exception:  # undecodable images are part of what the page shows
        return "<em>undecodable</em>"
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def samples_html(artifact: ArtifactDir, shards_uri: str, num_samples: int) -> str:
    """The first num_samples rows of the first shard, accepted or rejected, with their images."""
    tar_paths = list_shards(shards_uri)
    rows = []
    if tar_paths and num_samples > 0:
        shard = shard_id_of(tar_paths[0])
        results = {}
        for folder in ("captions", "rejected"):
            with artifact.open(f"{folder}/{shard}.parquet") as handle:
                for row in pq.read_table(handle).to_pylist():
                    results[row["key"]] = row
        fs, _ = fsspec.core.url_to_fs(shards_uri)
        for sample in iter_samples(fs, tar_paths[0]):
            if sample["key"] not in results:
                continue
            result = results[sample["key"]]
            if result.get("caption") is not None:
                generated = html.escape(result["caption"])
            else:
                generated = f"<b>rejected: {html.escape(result['reason'])}</b> "
                generated += html.escape(result.get("generated_text") or "")
            original = html.escape(sample.get("txt", b"").decode("utf-8", "replace"))
            rows.append(
                f"<tr><td>{html.escape(sample['key'])}</td><td>{_thumbnail(sample.get('jpg', b''))}</td>"
                f"<td>{original}</td><td>{generated}</td></tr>"
            )
            if len(rows) >= num_samples:
                break
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>recaption samples</title>"
        "<style>td{vertical-align:top;padding:4px;border-bottom:1px solid #ddd;max-width:480px}</style>"
        "</head><body><table>"
        "<tr><th>key</th><th>image</th><th>original caption</th><th>generated caption</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
