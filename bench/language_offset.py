"""Claim (D)'s text -> image half, at its cause: where the second language's captions land.

    python -m bench.language_offset --config configs/long_caption_experiment.yaml --artifacts ROOT \
        [--set KEY=VALUE ...] [--seeds 0 1 2 3 4 5] [--arms llm2clip base_llm] [--json out.json]

Reads a run's cached stages (shards, tiny models, the pretrained and the CC-tuned LLM; nothing is rerun),
trains the recipe's LLM arms for each seed as the experiment does (train_vision's production step, the
same settings, batch plan and threads per run: the raw recalls below are the experiment's table's, digit
for digit) and scores second-language retrieval on the held-out and the validation
scenes two ways:

  raw      as the experiment scores it (claim D)
  shifted  every second-language LLM feature moved, before the adapter, by the difference of the two
           languages' mean features: the English long captions' over the training split, the second
           language's over the validation split (no held-out caption informs the shift). The language's
           offset removed, each caption's own content kept.

and where the embedded captions lie: the mean cosine between two captions of one language (1: all of
them one point) and the cosine between the two languages' mean directions. A language whose captions sit
together, away from the English ones, is ranked by I2T (each image compares captions of that language
with each other) but not by T2I: there every caption is nearest to the same few images (hubness), so
raw T2I is at chance though the content arrived. Shifted recall says how much of the content did.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench.result import default_json, machine, write_result

KS = (1, 5)


def language_shift(features: torch.Tensor, source_mean: torch.Tensor, target_mean: torch.Tensor):
    """Features of one language moved onto another's mean: the offset goes, the spread stays."""
    return features - source_mean + target_mean


def mean_pair_cosine(embedded: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of rows (rows unit length): 1 when all are one direction."""
    n = embedded.shape[0]
    total = embedded.sum(0)
    return float((total @ total - n) / (n * (n - 1)))


def second_language_scores(image, embed_text, english, second, shift_from, shift_to) -> dict[str, float]:
    """image: unit image embeddings; embed_text: LLM features -> unit text embeddings; english and second:
    the scored scenes' LLM features, row i of each describing image i. Recalls in [0, 1]."""
    from ops.retrieval_metrics import image_text_recalls

    raw, english_embedded = embed_text(second), embed_text(english)
    shifted = embed_text(language_shift(second, shift_from, shift_to))
    scores = {f"raw_{k}": v for k, v in image_text_recalls(image, raw, KS, ties="strict").items()}
    scores.update(
        {f"shifted_{k}": v for k, v in image_text_recalls(image, shifted, KS, ties="strict").items()}
    )
    scores["cosine_within_second"] = mean_pair_cosine(raw)
    scores["cosine_within_english"] = mean_pair_cosine(english_embedded)
    scores["cosine_between_means"] = float(F.cosine_similarity(raw.mean(0), english_embedded.mean(0), dim=0))
    return scores


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/long_caption_experiment.yaml", help="the recipe")
    parser.add_argument("--artifacts", required=True, help="the run's artifact root")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--arms", nargs="+", default=["llm2clip", "base_llm"], choices=["llm2clip", "base_llm"]
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per training run (0: the recipe's cpus_per_run, as the stage's runs, so that "
        "the raw recalls are the experiment's own)",
    )
    parser.add_argument("--json", default=default_json("language_offset"))
    return parser.parse_args()


def _stage_folders(args) -> tuple[object, dict[str, str]]:
    """The experiment's config and, by role, the folders of the cached stages it reads, from the recipe's
    own plan (so a --set that changes a key points at that key's folders)."""
    from workflows.plan import build_plan
    from workflows.recipe import load_recipe
    from workflows.registry import CHAIN

    recipe = load_recipe(args.config, CHAIN, tuple(args.overrides))
    plan = {p.spec.name: p for p in build_plan(recipe.stages, CHAIN, args.artifacts)}
    config = plan["long_caption_experiment"].config
    roles = {
        "shards": ("download", "shards"),
        "vision": ("tiny_models", "vision"),
        "random_init": ("tiny_models", "llm"),
        "tuned": ("finetune_text", "encoder"),
        "base": (config.base_llm_stage, "llm"),
    }
    for stage in dict.fromkeys(stage for stage, _ in roles.values()):
        if not plan[stage].artifact.is_complete():
            raise SystemExit(
                f"{stage}: no finished artifact at {plan[stage].artifact.uri}; run the recipe first"
            )
    return config, {role: plan[stage].artifact.child_uri(child) for role, (stage, child) in roles.items()}


def main() -> None:
    args = _arguments()
    from experiments.long_caption.arms import build_arm, train_arm
    from experiments.long_caption.samples import captioned, load_encoders, read_samples, split_validation
    from experiments.long_caption.stage import arm_settings
    from models.vision_tower import load_vision_tower
    from ops.image_transforms import ImageTransformConfig

    config, folders = _stage_folders(args)
    began = time.perf_counter()
    train_samples, held_samples, _ = read_samples(folders["shards"], config)
    fit_samples, validation_samples = split_validation(train_samples, config.validation_share)
    if not validation_samples:
        raise SystemExit("the recipe sets no validation split (long_caption_experiment.validation_share)")
    tower, mean, std = load_vision_tower(folders["vision"])
    transform = ImageTransformConfig(size_px=int(tower.config.image_size), mean=mean, std=std)
    encoders, tokenizer = load_encoders(folders["tuned"], folders["base"], folders["random_init"])
    arm_encoders = {name: encoders[name] for name in ("finetuned", "base")}
    data = {
        name: captioned(samples, transform, arm_encoders, tokenizer, config)[0]
        for name, samples in (
            ("fit", fit_samples),
            ("held_out", held_samples),
            ("validation", validation_samples),
        )
    }
    print(f"[language_offset] captions encoded in {time.perf_counter() - began:.0f} s", flush=True)
    settings = arm_settings(config)
    # The thread count changes the order of floating-point sums, so it is part of what a run trains.
    torch.set_num_threads(args.threads or config.cpus_per_run)
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            encoder = "finetuned" if arm == "llm2clip" else "base"
            model = build_arm(arm, tower, data["fit"], settings, tokenizer, seed)
            train_arm(arm, model, data["fit"], settings, seed)
            model.eval()
            shift_to = data["fit"].llm_features[encoder]["long"].mean(0)
            shift_from = data["validation"].llm_features[encoder]["l2"].mean(0)
            row = {"arm": arm, "seed": seed}
            with torch.no_grad():
                for split in ("held_out", "validation"):
                    scored = data[split]
                    image = F.normalize(model.get_image_features(scored.pixels), dim=-1)
                    scores = second_language_scores(
                        image,
                        _embedder(model),
                        scored.llm_features[encoder]["long"],
                        scored.llm_features[encoder]["l2"],
                        shift_from,
                        shift_to,
                    )
                    row.update({f"{split}_{name}": value for name, value in scores.items()})
            rows.append(row)
            held = {
                name: 100 * row[f"held_out_{name}"]
                for name in ("raw_i2t_r1", "raw_t2i_r1", "shifted_i2t_r1", "shifted_t2i_r1")
            }
            print(
                f"[language_offset] {arm:<8} seed {seed}: held-out l2 R@1 raw I2T {held['raw_i2t_r1']:.1f} "
                f"T2I {held['raw_t2i_r1']:.1f}, shifted I2T {held['shifted_i2t_r1']:.1f} "
                f"T2I {held['shifted_t2i_r1']:.1f}",
                flush=True,
            )
    summary = summarize(rows, {"held_out": len(held_samples), "validation": len(validation_samples)})
    print(summary_table(summary))
    result = {
        "bench": "language_offset",
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "rows": rows,
        "summary": summary,
        "seconds": time.perf_counter() - began,
    }
    write_result(args.json, result)
    print(f"[language_offset] wrote {args.json}")


def summarize(rows: list[dict], sizes: dict[str, int]) -> dict:
    """Per arm: each metric's mean and std over seeds (std 0 for one seed), and each split's chance."""
    from experiments.long_caption import report

    arms = tuple(dict.fromkeys(row["arm"] for row in rows))
    names = tuple(name for name in rows[0] if name not in ("arm", "seed"))
    return {
        "chance": {split: 1 / size for split, size in sizes.items()},
        **report.summarize(rows, arms, names),
    }


def summary_table(summary: dict) -> str:
    """Markdown: per arm and split, second-language R@1 raw and shifted, and the caption geometry."""
    lines = [
        "| arm | scenes | raw I2T R@1 | raw T2I R@1 | shifted I2T R@1 | shifted T2I R@1 "
        "| cosine within l2 | cosine within English | cosine of the means |",
        "|---" * 9 + "|",
    ]
    for arm, metrics in summary.items():
        if arm == "chance":
            continue
        for split in ("held_out", "validation"):
            recalls = [
                _cell(metrics[f"{split}_{way}_{d}_r1"]) for way in ("raw", "shifted") for d in ("i2t", "t2i")
            ]
            geometry = [
                _cell(metrics[f"{split}_{name}"], percent=False)
                for name in ("cosine_within_second", "cosine_within_english", "cosine_between_means")
            ]
            chance = f"{split.replace('_', '-')} (chance {100 * summary['chance'][split]:.2f}%)"
            lines.append(f"| {arm} | {chance} | " + " | ".join(recalls + geometry) + " |")
    return "\n".join(lines)


def _cell(value: dict[str, float], percent: bool = True) -> str:
    """'mean ± std', in % to one digit or as a cosine to two."""
    scale, digits = (100, 1) if percent else (1, 2)
    return f"{scale * value['mean']:.{digits}f} ± {scale * value['std']:.{digits}f}"


def _embedder(model):
    """The arm's text side: LLM features -> unit text embeddings."""
    return lambda features: F.normalize(model.get_text_features(features), dim=-1)


if __name__ == "__main__":
    main()
