"""The long-caption experiment's report: per-arm means over seeds, the paper's claims checked against
them, the markdown table, and the plots (R@1 per arm and caption kind; R@1 against caption length)."""

from __future__ import annotations

import itertools
import statistics

KINDS = ("short", "long", "l2", "syn")
METRICS = tuple(f"{kind}_{d}_r{k}" for kind in KINDS for d in ("i2t", "t2i") for k in (1, 5))


def summarize(
    results: list[dict], arms: tuple[str, ...], metrics: tuple[str, ...] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """arm -> metric -> {mean, std} over seeds (std 0 for a single seed); metrics: the experiment's recalls
    and losses unless named."""
    if metrics is None:
        metrics = (*METRICS, *(f"val_{m}" for m in METRICS), "loss_first", "loss_last")
    summary = {}
    for arm in arms:
        rows = [r for r in results if r["arm"] == arm]
        summary[arm] = {}
        for metric in metrics:
            if not rows or metric not in rows[0]:
                continue
            values = [r[metric] for r in rows]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[arm][metric] = {"mean": statistics.fmean(values), "std": std}
    return summary


def _mean_r1(summary, arm: str, kind: str) -> tuple[float, float]:
    """Mean of I2T and T2I R@1 for a caption kind, and the larger of their seed stds."""
    i2t, t2i = summary[arm][f"{kind}_i2t_r1"], summary[arm][f"{kind}_t2i_r1"]
    return (i2t["mean"] + t2i["mean"]) / 2, max(i2t["std"], t2i["std"])


def _claim(summary, claim: str, arm: str, other: str, kind: str, well_above: bool) -> dict:
    (a, a_std), (o, o_std) = _mean_r1(summary, arm, kind), _mean_r1(summary, other, kind)
    spread = max(a_std, o_std)
    holds = a - o > spread if well_above else a > o
    return {"claim": claim, "arm": a, "other": o, "gap": a - o, "seed_std": spread, "holds": holds}


def check_claims(summary, cra: dict[str, float] | None = None, chance: float | None = None) -> list[dict]:
    """The paper's claims in miniature, on R@1 (mean of both directions, over seeds). 'Well above' asks
    for a gap larger than the seed-to-seed spread. (A) CRA: fine-tuning lifts the base LLM's;
    (B) llm2clip over base_llm on long captions; (C) over clip_77 on long captions; (C') clip_long over
    clip_77; (D) second-language captions, never trained on, retrieved by llm2clip above chance and above
    both text towers by more than 3 seed stds; (E) synonym captions (words no training caption holds):
    llm2clip well above clip_long, and (E') llm2clip keeps more than half its long-caption R@1 on them."""
    claims = []
    if cra and {"cra_base", "cra_finetuned"} <= cra.keys():
        gap = cra["cra_finetuned"] - cra["cra_base"]
        claims.append(
            {
                "claim": "(A) CC fine-tuning lifts the base LLM's CRA",
                "arm": cra["cra_finetuned"],
                "other": cra["cra_base"],
                "gap": gap,
                "seed_std": 0.0,
                "holds": gap > 0,
            }
        )
    if {"llm2clip", "base_llm"} <= summary.keys():
        claims.append(
            _claim(
                summary,
                "(B) llm2clip well above base_llm on long captions",
                "llm2clip",
                "base_llm",
                "long",
                True,
            )
        )
    if {"llm2clip", "clip_77"} <= summary.keys():
        claims.append(
            _claim(
                summary, "(C) llm2clip beats clip_77 on long captions", "llm2clip", "clip_77", "long", False
            )
        )
    if {"clip_long", "clip_77"} <= summary.keys():
        claims.append(
            _claim(
                summary,
                "(C') clip_long beats clip_77 on long captions",
                "clip_long",
                "clip_77",
                "long",
                False,
            )
        )
    if "llm2clip" in summary and "l2_i2t_r1" in summary["llm2clip"] and chance is not None:
        claims.append(_second_language_claim(summary, chance))
    if {"llm2clip", "clip_long"} <= summary.keys() and "syn_i2t_r1" in summary["llm2clip"]:
        claims.append(
            _claim(
                summary,
                "(E) llm2clip well above clip_long on synonym captions",
                "llm2clip",
                "clip_long",
                "syn",
                True,
            )
        )
        (syn, syn_std), (long, long_std) = (_mean_r1(summary, "llm2clip", k) for k in ("syn", "long"))
        claims.append(
            {
                "claim": "(E') llm2clip keeps over half its long-caption R@1 on synonym captions",
                "arm": syn,
                "other": long,
                "gap": syn - long,
                "seed_std": max(syn_std, long_std),
                "holds": syn > long / 2,
            }
        )
    return claims


def _second_language_claim(summary, chance: float) -> dict:
    """(D): above chance and above the better text tower (which cannot know the language), each by more
    than 3 seed stds of the arms compared."""
    r1, std = _mean_r1(summary, "llm2clip", "l2")
    towers = [_mean_r1(summary, arm, "l2") for arm in ("clip_77", "clip_long") if arm in summary]
    best, best_std = max(towers, default=(chance, 0.0))
    spread = max(std, best_std)
    return {
        "claim": "(D) llm2clip retrieves second-language captions above chance and both text towers",
        "arm": r1,
        "other": max(best, chance),
        "gap": r1 - max(best, chance),
        "seed_std": spread,
        "holds": r1 - chance > 3 * spread and r1 - best > 3 * spread,
    }


def table_markdown(
    summary, claims, seeds, sizes: dict, cra: dict[str, float], probes: dict[str, dict] | None = None
) -> str:
    metrics = [m for m in METRICS if m in next(iter(summary.values()))]
    header = ["arm"] + [
        m.replace("_r", " R@").replace("_", " ").replace("i2t", "I2T").replace("t2i", "T2I") for m in metrics
    ]
    lines = [
        f"# Long-caption experiment ({len(seeds)} seeds: {', '.join(map(str, seeds))})",
        "",
        f"{sizes['train']:.0f} training scenes ({sizes['validation']:.0f} of them set aside for validation), "
        f"{sizes['held_out']:.0f} held out; recall in %, mean ± std over seeds, on the held-out scenes. "
        f"{100 * sizes['long_cut']:.0f}% of the held-out long captions exceed the clip_77 arm's "
        f"{sizes['max_tokens']:.0f} tokens (mean length {sizes['long_tokens']:.0f} tokens).",
        "",
        "CRA on the held-out scenes: "
        + ", ".join(f"{name.removeprefix('cra_')} {100 * value:.1f}" for name, value in cra.items()),
        "",
        *_probe_lines(probes or {}, sizes),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for arm, values in summary.items():
        cells = [f"{100 * values[m]['mean']:.1f} ± {100 * values[m]['std']:.1f}" for m in metrics]
        lines.append("| " + " | ".join([arm, *cells]) + " |")
    lines += ["", "| claim (R@1: mean of I2T and T2I, %) | arm | other | gap | seed std | holds |"]
    lines.append("|---|---|---|---|---|---|")
    for c in claims:
        values = [f"{100 * c[k]:.1f}" for k in ("arm", "other", "gap", "seed_std")]
        lines.append("| " + " | ".join([c["claim"], *values, "yes" if c["holds"] else "no"]) + " |")
    return "\n".join(lines) + "\n"


PROBE_TITLES = {
    "l2": "Cross-lingual probe on the validation scenes (second-language dense caption -> its English one",
    "syn": "Synonym probe on the validation scenes (dense caption in synonyms -> the canonical one",
}


def _probe_lines(probes: dict[str, dict], sizes: dict) -> list[str]:
    lines = []
    for kind, scores in probes.items():
        if not scores:
            continue
        shown = ", ".join(f"{n.removeprefix(f'{kind}_cra_')} {100 * v:.1f}" for n, v in scores.items())
        unseen = sizes.get(f"{kind}_unseen_token_share")
        tail = (
            f"; {100 * unseen:.0f}% of the held-out captions' tokens never in a training caption"
            if (unseen is not None)
            else ""
        )
        lines += [
            f"{PROBE_TITLES[kind]}, CRA %): {shown} (centered: each side's mean removed first){tail}",
            "",
        ]
    return lines


def recall_by_length(results: list[dict], lengths: list[int], bins: int = 4) -> dict[str, list[dict]]:
    """arm -> per token-length bin of the held-out long captions: its range and the R@1 (mean of I2T and
    T2I hits, over seeds) of the captions in it."""
    order = sorted(lengths)
    edges = [order[min(len(order) - 1, round(i * len(order) / bins))] for i in range(bins)] + [order[-1] + 1]
    curves: dict[str, list[dict]] = {}
    for arm in dict.fromkeys(r["arm"] for r in results):
        rows = [r for r in results if r["arm"] == arm]
        curve = []
        for low, high in itertools.pairwise(edges):
            members = [i for i, n in enumerate(lengths) if low <= n < high]
            if not members:
                continue
            hits = [(r["long_i2t_hits"][i] + r["long_t2i_hits"][i]) / 2 for r in rows for i in members]
            curve.append({"from": low, "to": high - 1, "count": len(members), "r1": sum(hits) / len(hits)})
        curves[arm] = curve
    return curves


def length_plot(curves: dict[str, list[dict]], context: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ops.plots import png_bytes

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for arm, curve in curves.items():
        axis.plot(
            [(b["from"] + b["to"]) / 2 for b in curve], [100 * b["r1"] for b in curve], marker="o", label=arm
        )
    axis.axvline(context, color="gray", linestyle="--", linewidth=1)
    axis.text(context, axis.get_ylim()[1], f" {context} tokens", va="top", color="gray")
    axis.set(
        xlabel="long caption length (tokens)", ylabel="R@1 (%)", title="Held-out long captions by length"
    )
    axis.legend()
    return png_bytes(figure)


def recall_plot(summary) -> bytes:
    """Grouped bars: R@1 per arm, short vs long captions, both directions, with seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ops.plots import png_bytes

    columns = [
        c
        for c in (f"{kind}_{d}_r1" for kind in KINDS for d in ("i2t", "t2i"))
        if c in next(iter(summary.values()))
    ]
    figure, axis = plt.subplots(figsize=(11, 3.5))
    width = 0.8 / len(summary)
    for i, (arm, metrics) in enumerate(summary.items()):
        positions = [c + (i - (len(summary) - 1) / 2) * width for c in range(len(columns))]
        means = [100 * metrics[c]["mean"] for c in columns]
        errors = [100 * metrics[c]["std"] for c in columns]
        axis.bar(positions, means, width, yerr=errors, capsize=3, label=arm)
    axis.set_xticks(range(len(columns)), [c.replace("_r1", " R@1").replace("_", " ") for c in columns])
    axis.set_ylabel("recall (%)")
    axis.set_title("Held-out scenes: short, long, second-language and synonym captions")
    axis.legend()
    return png_bytes(figure)
