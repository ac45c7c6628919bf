"""The evaluate stage's report: tables (markdown, HTML) in the paper's layout and PNG plots."""

from __future__ import annotations

import html as html_lib

import torch

from ops.plots import png_bytes

KS = (1, 5, 10)


def _is_retrieval(metrics: dict[str, float]) -> bool:
    return "i2t_r1" in metrics


def _ties_matter(metrics: dict[str, float]) -> bool:
    return any(
        metrics.get(f"{d}_r{k}_strict", metrics[f"{d}_r{k}"]) != metrics[f"{d}_r{k}"]
        for d in ("i2t", "t2i")
        for k in KS
    )


def tables(results: dict[str, dict[str, float]], title: str) -> tuple[str, str]:
    """(markdown, html). First the paper's layout: one row, an I2T/T2I R@1 column pair per retrieval set
    (percent, the standard tie rule, comparable with the papers); then per set R@1/5/10 and CRA; where
    duplicates make them differ, the strict R@1 and the tied queries; then zero-shot top-1/top-5."""
    retrieval = {name: m for name, m in results.items() if _is_retrieval(m)}
    zero_shot = {name: m for name, m in results.items() if not _is_retrieval(m)}
    blocks: list[tuple[str, list[str], list[list[str]]]] = []
    if retrieval:
        header = ["model"] + [f"{name} {d}" for name in retrieval for d in ("I2T", "T2I")]
        row = [title] + [f"{100 * m[f'{d}_r1']:.1f}" for m in retrieval.values() for d in ("i2t", "t2i")]
        blocks.append(("Retrieval R@1 (%)", header, [row]))
        detail_header = (
            ["set", "images", "captions"] + [f"{d} R@{k}" for d in ("I2T", "T2I") for k in KS] + ["CRA"]
        )
        detail_rows = [
            [name, f"{m['images']:.0f}", f"{m['captions']:.0f}"]
            + [f"{100 * m[f'{d}_r{k}']:.1f}" for d in ("i2t", "t2i") for k in KS]
            + [f"{100 * m['cra']:.1f}" if "cra" in m else "-"]
            for name, m in retrieval.items()
        ]
        blocks.append(("Retrieval detail (%)", detail_header, detail_rows))
        tied = {name: m for name, m in retrieval.items() if _ties_matter(m)}
        if tied:  # where duplicates make the two rules differ (ops.retrieval_metrics)
            tie_header = ["set"] + [
                f"{d} R@1 {rule}" for d in ("I2T", "T2I") for rule in ("standard", "strict")
            ]
            tie_rows = [
                [name]
                + [f"{100 * m[f'{d}_r1{suffix}']:.1f}" for d in ("i2t", "t2i") for suffix in ("", "_strict")]
                + [f"{m['i2t_tied_queries']:.0f} / {m['t2i_tied_queries']:.0f}"]
                for name, m in tied.items()
            ]
            blocks.append(
                (
                    "Ties (standard: CLIP_benchmark's rule; strict: ties are misses)",
                    [*tie_header, "tied queries I2T / T2I"],
                    tie_rows,
                )
            )
    if zero_shot:
        rows = [
            [name, f"{m['images']:.0f}", f"{100 * m['top1']:.1f}", f"{100 * m['top5']:.1f}"]
            for name, m in zero_shot.items()
        ]
        blocks.append(("Zero-shot classification (%)", ["set", "images", "top-1", "top-5"], rows))
    markdown = [f"# Evaluation: {title}", ""]
    html = [f"<html><body><h1>Evaluation: {html_lib.escape(title)}</h1>"]
    for caption, header, rows in blocks:
        markdown += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        markdown += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        html.append(f"<h2>{html_lib.escape(caption)}</h2><table border='1' cellpadding='4'>")
        html.append("<tr>" + "".join(f"<th>{html_lib.escape(h)}</th>" for h in header) + "</tr>")
        html += ["<tr>" + "".join(f"<td>{html_lib.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        html.append("</table>")
    html.append("</body></html>")
    return "\n".join(markdown), "\n".join(html)


def recall_bars_png(results: dict[str, dict[str, float]]) -> bytes | None:
    """Grouped bars: per retrieval set, I2T and T2I at R@1/5/10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    retrieval = {name: m for name, m in results.items() if _is_retrieval(m)}
    if not retrieval:
        return None
    series = [(f"{d.upper()} R@{k}", f"{d}_r{k}") for d in ("i2t", "t2i") for k in KS]
    figure, axis = plt.subplots(figsize=(max(5, 1.8 * len(retrieval)), 3.5))
    width = 0.8 / len(series)
    for index, (label, key) in enumerate(series):
        positions = [i + (index - len(series) / 2 + 0.5) * width for i in range(len(retrieval))]
        axis.bar(positions, [100 * m[key] for m in retrieval.values()], width, label=label)
    axis.set_xticks(range(len(retrieval)), list(retrieval))
    axis.set_ylabel("recall (%)")
    axis.set_ylim(0, 100)
    axis.legend(ncol=2, fontsize=7)
    axis.set_title("Image-text retrieval")
    return png_bytes(figure)


def heatmap_png(sample: dict, count: int, name: str) -> bytes:
    """Cosine similarity of the first `count` images against their first captions (a bright diagonal
    is what a good model shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(sample["first_caption"]))
    images = torch.nn.functional.normalize(sample["images"][:count], dim=-1)
    text = torch.nn.functional.normalize(sample["text"][sample["first_caption"][:count]], dim=-1)
    similarity = (images @ text.T).numpy()
    figure, axis = plt.subplots(figsize=(4.5, 4))
    shown = axis.imshow(similarity, cmap="viridis")
    figure.colorbar(shown, ax=axis, fraction=0.046)
    axis.set_xlabel("caption (first of each image)")
    axis.set_ylabel("image")
    axis.set_title(f"{name}: image-caption similarity")
    return png_bytes(figure)
