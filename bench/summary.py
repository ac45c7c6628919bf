"""One table out of every benchmark's JSON: each figure beside the baseline it was measured against in
the same run, as a ratio (figure / baseline figure, so 1.0 means "as fast as the baseline" for rates and
"as long as the baseline" for wall times)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bench.suite_table import SuiteRow


def _rows_against(result: dict, figure_key: str, unit: str, baseline_name: str) -> list[SuiteRow]:
    """Rows of a bench whose JSON lists named rows, the baseline among them."""
    rows = result["rows"]
    base = next(r for r in rows if r["name"] == baseline_name)[figure_key]
    return [
        SuiteRow(
            result["bench"], r["name"], r[figure_key], unit, baseline_name, round(r[figure_key] / base, 3)
        )
        for r in rows
    ]


def _demo_walltime(result: dict) -> list[SuiteRow]:
    """A recipe's cold run and cached rerun (the demo's, or another recipe's under its own name)."""
    cold, name = result["cold_s"], result.get("bench", "demo_walltime")
    return [
        SuiteRow(name, "cold run", cold, "s", "cold run", 1.0),
        SuiteRow(
            name,
            "fully cached rerun",
            result["cached_rerun_s"],
            "s",
            "cold run",
            result["cached_over_cold"],
        ),
    ]


def _download(result: dict) -> list[SuiteRow]:
    base = "local decode+resize ceiling"
    rows = _rows_against(result, "per_core", "img/s/core", base)
    fit = result.get("fit")
    if fit:  # steady state apart from start-up: wall = start + n x per-image over several sizes
        ceiling = next(r for r in result["rows"] if r["name"] == base)["per_core"]
        sizes = "/".join(str(n) for n in fit["sizes"])
        rows += [
            SuiteRow(
                result["bench"],
                f"download stage, 1 proc, per image (fit over {sizes})",
                fit["per_core"],
                "img/s/core",
                base,
                round(fit["per_core"] / ceiling, 3),
            ),
            SuiteRow(result["bench"], "download stage, fixed cost (fit)", fit["start_s"], "s", "", None),
        ]
    return rows


def _recaption(result: dict) -> list[SuiteRow]:
    rows = _rows_against(result, "tokens_per_s", "tok/s", "plain vllm.LLM.chat")
    fit = result.get("fit")
    if fit:  # steady state apart from start-up: wall = start + n x per-image over several sizes
        sizes = "/".join(str(n) for n in fit["sizes"])
        bare, stage = fit["images_per_s"]["bare"], fit["images_per_s"]["stage"]
        base = f"plain vllm.LLM.chat, per image (fit over {sizes})"
        rows += [
            SuiteRow(result["bench"], base, bare, "img/s", base, 1.0),
            SuiteRow(
                result["bench"],
                f"recaption stage, per image (fit over {sizes})",
                stage,
                "img/s",
                base,
                fit["per_image_ratio"],
            ),
            SuiteRow(
                result["bench"],
                "recaption stage, fixed cost (fit)",
                fit["start_s"]["stage"],
                "s",
                "plain vllm.LLM.chat, fixed cost (fit)",
                round(fit["start_s"]["stage"] / max(fit["start_s"]["bare"], 1e-9), 3),
                f"plain vLLM's: {fit['start_s']['bare']} s",
            ),
        ]
    return rows


def _finetune(result: dict) -> list[SuiteRow]:
    return _rows_against(result, "loop_pairs_per_s", "pairs/s", "no Ray (one process)")


def _embed(result: dict) -> list[SuiteRow]:
    rows = _rows_against(result, "captions_per_s", "captions/s", "bare encoder forward (sorted)")
    by_name = {r["name"]: r for r in result["rows"]}
    sorted_share = by_name["embed stage, wall (sorted)"]["padding_share"]
    unsorted_share = by_name["embed stage, wall (unsorted)"]["padding_share"]
    rows.append(
        SuiteRow(
            "embed_throughput",
            "padded-token share with length bucketing",
            sorted_share,
            "share",
            "without bucketing",
            round(sorted_share / unsorted_share, 3) if unsorted_share else None,
        )
    )
    fit = result.get("fit")
    if fit:  # steady state apart from start-up: wall = start + n x per-caption over several sizes
        bare = by_name["bare encoder forward (sorted)"]["captions_per_s"]
        sizes = "/".join(str(n) for n in fit["captions"])
        rows += [
            SuiteRow(
                "embed_throughput",
                f"embed stage, per caption (fit over {sizes})",
                fit["captions_per_s"],
                "captions/s",
                "bare encoder forward (sorted)",
                round(fit["captions_per_s"] / bare, 3),
            ),
            SuiteRow("embed_throughput", "embed stage, fixed cost (fit)", fit["start_s"], "s", "", None),
        ]
    return rows


def _vision(result: dict) -> list[SuiteRow]:
    return _rows_against(result, "images_per_s", "img/s", "precomputed features, in-memory batches")


def _decode(result: dict) -> list[SuiteRow]:
    """Per-core decode rates against one process; the cores-per-GPU figure derived from them."""
    one, two, cores = result["rows"]
    return [
        SuiteRow(result["bench"], one["name"], one["figure"], one["unit"], one["name"], 1.0),
        SuiteRow(
            result["bench"],
            two["name"],
            two["figure"],
            two["unit"],
            one["name"],
            round(two["figure"] / one["figure"], 3),
        ),
        SuiteRow(
            result["bench"], cores["name"], cores["figure"], cores["unit"], two["name"], None, cores["note"]
        ),
    ]


def _scaling(result: dict) -> list[SuiteRow]:
    """Throughput per (part, size, workers) against the same part and size on one worker."""
    out = []
    for row in result["rows"]:
        base = next(
            r
            for r in result["rows"]
            if r["part"] == row["part"] and r["size"] == row["size"] and r["workers"] == 1
        )
        name = (
            f"{row['part']}, {row['size_label']}, {row['workers']} worker{'s' if row['workers'] > 1 else ''}"
        )
        out.append(
            SuiteRow(
                "scaling",
                name,
                row["per_s"],
                row["unit"],
                f"{row['part']}, {row['size_label']}, 1 worker",
                round(row["per_s"] / base["per_s"], 3),
            )
        )
    return out


def _cluster(result: dict) -> list[SuiteRow]:
    note = "one machine: overhead, not speed-up"
    return [
        dataclasses.replace(row, note=note if row.ratio != 1.0 else "")
        for row in _rows_against(result, "wall_s", "s", "one node (4 CPUs)")
    ]


def _gpu(result: dict) -> list[SuiteRow]:
    if result.get("skipped"):
        return [
            SuiteRow("gpu_throughput", "vision MFU, embed throughput", None, "", "", None, result["skipped"])
        ]
    return [
        SuiteRow(
            "gpu_throughput", r["name"], r["figure"], r["unit"], r["baseline"], r["ratio"], r.get("note", "")
        )
        for r in result["rows"]
    ]


def _mntp_memory(result: dict) -> list[SuiteRow]:
    return _rows_against(result, "peak_above_model_mib", "MiB", "full vocabulary logits at every position")


def _data_scale(result: dict) -> list[SuiteRow]:
    """Per piece of this checkout: peak RSS at the largest size against the smallest (the flat-memory
    target is at most 1.2x from 10^4 to 10^5), and a resume's reads against reading the epoch through."""
    rows: list[SuiteRow] = []
    now = [r for r in result["rows"] if r.get("code") == "now" and "error" not in r]
    for piece in dict.fromkeys(r["piece"] for r in now):
        sizes = sorted((r for r in now if r["piece"] == piece), key=lambda r: r["size"])
        small, large = sizes[0], sizes[-1]
        rows.append(
            SuiteRow(
                result["bench"],
                f"{piece} peak RSS at {large['size']:,}",
                large["peak_rss_mib"],
                "MiB",
                f"at {small['size']:,}",
                round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
            )
        )
    return rows


EXTRACTORS: dict[str, Callable[[dict], list[SuiteRow]]] = {
    "demo_walltime": _demo_walltime,
    "long_caption_walltime": _demo_walltime,
    "download_throughput": _download,
    "recaption_throughput": _recaption,
    "finetune_throughput": _finetune,
    "embed_throughput": _embed,
    "vision_step_time": _vision,
    "decode_throughput": _decode,
    "scaling": _scaling,
    "cluster_overhead": _cluster,
    "gpu_throughput": _gpu,
    "mntp_memory": _mntp_memory,
    "data_scale": _data_scale,
}


def suite_rows(results: dict[str, dict]) -> list[SuiteRow]:
    """Rows in EXTRACTORS' order for every bench that produced a result; a failed bench gets a row that
    says so rather than vanishing from the table."""
    rows: list[SuiteRow] = []
    for bench, extract in EXTRACTORS.items():
        if bench not in results:
            continue
        result = results[bench]
        if "error" in result:
            rows.append(SuiteRow(bench, "(failed)", None, "", "", None, result["error"]))
            continue
        rows.extend(extract(result))
    return rows
