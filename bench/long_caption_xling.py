"""Claim (D) of the long-caption experiment, at its source: does any of a run's LLMs (random-init,
pretrained, CC-tuned) place a second-language caption next to its English one?

    python -m bench.long_caption_xling --run ARTIFACTS [--encoder CC_ENCODER_FOLDER]

Prints CRA from second-language dense captions to English dense captions and paraphrases, beside
English paraphrase -> dense, among the experiment's validation families (never the held-out scenes).
Vision training on English captions can carry retrieval into the second language only if the text side
already aligns the two.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="artifact root of a long-caption experiment run")
    parser.add_argument("--encoder", default="", help="a CC encoder folder (default: the run's newest)")
    parser.add_argument("--candidates", type=int, default=256, help="validation scenes scored")
    parser.add_argument("--validation-share", type=float, default=0.125, help="as the recipe's")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    from experiments.long_caption.config import LongCaptionExperimentConfig
    from experiments.long_caption.samples import (
        load_encoders,
        read_samples,
        split_validation,
    )
    from ops.retrieval_metrics import caption_retrieval_accuracy

    root = Path(args.run)
    shards, base, random_init = (
        _newest(root, pattern) for pattern in ("download/*/shards", "lm_pretrain/*/llm", "tiny_models/*/llm")
    )
    tuned = Path(args.encoder) if args.encoder else _newest(root, "finetune_text/*/encoder")
    config = LongCaptionExperimentConfig()
    train, _, _ = read_samples(str(shards), config)
    _, validation = split_validation(train, args.validation_share)
    validation = validation[: args.candidates]
    encoders, tokenizer = load_encoders(str(tuned), str(base), str(random_init))
    texts = {
        "English dense": [s.long for s in validation],
        "English paraphrase": [s.paraphrase for s in validation],
        "second-language dense": [s.l2 for s in validation],
    }
    pairs = [
        ("English paraphrase", "English dense"),
        ("second-language dense", "English dense"),
        ("second-language dense", "English paraphrase"),
    ]
    print(f"CRA among {len(validation)} validation scenes (query -> key):")
    with torch.no_grad():
        for name, encoder in encoders.items():
            features = {kind: encoder.encode(tokenizer, captions).float() for kind, captions in texts.items()}
            scores = ", ".join(
                f"{query} -> {key} {caption_retrieval_accuracy(features[query], features[key]):.3f}"
                for query, key in pairs
            )
            print(f"  {name}: {scores}")


def _newest(root: Path, pattern: str) -> Path:
    """The newest finished stage folder's `pattern` match (a run root may hold several configs' runs)."""
    found = [p for p in root.glob(pattern) if (p.parent / "manifest.json").exists()]
    if not found:
        raise SystemExit(f"{root}: no finished {pattern}")
    return max(found, key=lambda p: (p.parent / "manifest.json").stat().st_mtime)


if __name__ == "__main__":
    main()
