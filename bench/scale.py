"""Flat in dataset size: each stage's per-process work on synthetic datasets of 10^4 and 10^5 samples (10^6
for the pieces that are cheap per sample), each piece in a process of its own, with its wall time, time
per sample and peak RSS; with --before REV the same pieces on an older checkout, side by side.

    python -m bench.scale                       # 10^4 and 10^5, this checkout (~6 min on 2 cores)
    python -m bench.scale --million             # and 10^6 for url screening, pair building, caption reading
    python -m bench.scale --before 9461bea      # and the same pieces on that commit, beside them

Pieces (the process each one stands for):
  url_screen          download's driver: url table -> screened input parts for img2dataset
  pairs_driver        finetune_text's driver: download parquet -> pairs/train.parquet
  pairs_worker        a finetune_text worker: 200 steps of 64 pairs from pairs/train.parquet
  embed_captions      an embed task: every shard's captions (status tables; *_from_tars: the tar members)
  vision_plan         train_vision's driver: the sample plan from sidecars and status tables
  vision_loader       a train_vision worker: 100 decoded batches of 64
  vision_resume       a train_vision worker resumed 90% into its epoch: samples read before its first
                      batch (*_read_through: without the stream snapshot, as before the seek)

The targets (issue 34): peak RSS at 10^5 at most 1.2x that at 10^4; time per sample flat within noise;
a resume reads O(one shard).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import scale_data

REPO = Path(__file__).resolve().parents[1]
PIECES = {  # piece -> the data it needs
    "url_screen": scale_data.url_table,
    "pairs_driver": scale_data.download_artifact,
    "pairs_worker": scale_data.pair_file,
    "embed_captions": scale_data.vision_shards,
    "embed_captions_from_tars": scale_data.vision_shards,
    "vision_plan": scale_data.vision_shards,
    "vision_loader": scale_data.vision_shards,
    "vision_resume": scale_data.vision_shards,
    "vision_resume_read_through": scale_data.vision_shards,
}
CHEAP = ("url_screen", "pairs_driver")  # run at 10^6 with --million
NEW_ONLY = ("embed_captions_from_tars", "vision_resume", "vision_resume_read_through", "vision_plan")


def run_piece(piece: str, work: Path, size: int, checkout: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "NO_ALBUMENTATIONS_UPDATE": "1"}
    script = REPO / "bench" / "scale_pieces.py"
    done = subprocess.run(
        [sys.executable, str(script), piece, str(work), str(size)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        return {"piece": piece, "size": size, "error": done.stderr.strip().splitlines()[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


FIXED_WORK = ("pairs_worker", "vision_loader", "vision_resume", "vision_resume_read_through")


def table(rows: list[dict]) -> str:
    """Per piece, code and size. Marginal us/sample: the time the extra samples took over the next
    smaller size (start-up, the same at every size, drops out); pieces of a fixed amount of work (a
    worker's steps, a resume) have none: their wall time itself should stay flat."""
    lines = [
        "| piece | code | API | samples | wall s | marginal us/sample | peak RSS MiB | RSS x vs smallest "
        "| Arrow peak MiB | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    smallest: dict = {}
    previous: dict = {}
    for row in rows:
        if "error" in row:
            cells = [row["piece"], row["code"], "-", f"{row['size']:,}", *["-"] * 5, row["error"]]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        key = (row["piece"], row["code"])
        smallest.setdefault(key, row["peak_rss_mib"])
        marginal = "-"
        if key in previous and row["piece"] not in FIXED_WORK:
            size, wall = previous[key]
            marginal = f"{1e6 * (row['wall_s'] - wall) / (row['size'] - size):.1f}"
        previous[key] = (row["size"], row["wall_s"])
        notes = ", ".join(
            f"{k} {v}"
            for k, v in row.items()
            if k in ("resume_samples_read", "resume_s", "groups_read") and v is not None
        )
        lines.append(
            f"| {row['piece']} | {row['code']} | {row['api']} | {row['size']:,} | {row['wall_s']:.2f} | "
            f"{marginal} | {row['peak_rss_mib']:.0f} | {row['peak_rss_mib'] / smallest[key]:.2f} | "
            f"{row.get('arrow_peak_mib', 0):.0f} | {notes} |"
        )
    return "\n".join(lines)


def ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (list(PIECES).index(r["piece"]), r["code"] != "before", r["size"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--million", action="store_true", help="also 10^6 for " + ", ".join(CHEAP))
    parser.add_argument("--before", default="", help="a git revision to run the same pieces on, beside")
    parser.add_argument("--pieces", nargs="+", default=list(PIECES), choices=list(PIECES))
    parser.add_argument("--work", default="", help="where the datasets go (default: a temp folder)")
    parser.add_argument("--json", default="", help="write the rows here too")
    parser.add_argument("--table", nargs="+", default=[], help="only print the table of these JSON files")
    args = parser.parse_args()
    if args.table:  # a later file's row replaces an earlier one's of the same piece, code and size
        merged = {}
        for path in args.table:
            for row in json.loads(Path(path).read_text())["rows"]:
                merged[(row["piece"], row["code"], row["size"])] = row
        print(table(ordered(list(merged.values()))))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="scale-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    checkouts = {"now": REPO}
    if args.before:
        before = work / f"checkout-{args.before}"
        if not before.exists():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True
            )
        checkouts["before"] = before
    rows = []
    for piece in args.pieces:
        sizes = list(args.sizes) + ([1_000_000] if args.million and piece in CHEAP else [])
        for size in sizes:
            PIECES[piece](work, size)
            for code, checkout in checkouts.items():
                if code == "before" and piece in NEW_ONLY:
                    continue  # the same code either way (or none before): measured once
                row = {**run_piece(piece, work, size, checkout), "code": code}
                print(json.dumps(row), flush=True)
                rows.append(row)
    rows = ordered(rows)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": "data_scale", "rows": rows}, indent=1))
    if args.before:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(checkouts["before"])], check=False
        )


if __name__ == "__main__":
    main()
