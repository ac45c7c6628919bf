"""The experiment's knowledge probes as a quick loop, for tuning the LM corpus on validation scenes only:
pretrain the experiment's tiny LLM on the corpus with the given levers, then score how well each
second-language dense caption (cross-lingual) and each dense caption in synonyms (synonym) retrieves its
English one (CRA, mean-pooled, bidirectional, as the experiment's probes), on fresh rich scenes of a
"probe-val" stream (neither the scenes stage's splits nor the held-out scenes).

    python -m bench.knowledge_probe --llm RUN/tiny_models/<key>/llm --steps 300 \
        --code-switched-weight 0.2 --switch-share 0.3 --synonym-share 0.3 --json out.json

Prints the random-init and the pretrained LLM's probe CRAs and the validation perplexity; no vision
training, so one setting costs the pretraining alone (~1-3 min on 2 cores at the recipe's 300 steps).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time

import torch


def probe_cra(
    model, tokenizer, scenes: int, batch_size: int = 32, bidirectional: bool = True
) -> dict[str, dict[str, float]]:
    """raw: cosine of the pooled features as they are; centered: each language's mean feature removed
    first. Mean-pooled features of a small LM share one large direction, so under raw cosine one key can
    win every query (hubness: CRA 1/N exactly), which says nothing about whether the content aligns."""
    from demo import rich_scenes
    from demo.second_language import l2_dense_caption
    from demo.synonyms import synonym_caption
    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import TextEncoderConfig
    from ops.retrieval_metrics import caption_retrieval_accuracy

    rows = [rich_scenes.sample_rich_scene(0, "probe-val", i, 4, f"probe-val-{i}") for i in range(scenes)]
    encoder = LLMTextEncoder(model.eval(), TextEncoderConfig(max_length=320, bidirectional=bidirectional))
    english = [rich_scenes.rich_dense_caption(s) for s in rows]
    queries = {"l2": [l2_dense_caption(s) for s in rows], "syn": [synonym_caption(t) for t in english]}
    scores = {}
    with torch.no_grad():
        keys = encoder.encode(tokenizer, english, batch_size=batch_size).float()
        for kind, texts in queries.items():
            query = encoder.encode(tokenizer, texts, batch_size=batch_size).float()
            scores[kind] = {
                "raw": caption_retrieval_accuracy(query, keys),
                "centered": caption_retrieval_accuracy(query - query.mean(0), keys - keys.mean(0)),
            }
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", required=True, help="the random-init tiny LLM folder (tiny_models' llm/)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument(
        "--weights",
        type=float,
        nargs=4,
        default=(0.45, 0.2, 0.1, 0.25),
        help="english, l2, parallel, general document weights",
    )
    parser.add_argument("--code-switched-weight", type=float, default=0.0)
    parser.add_argument("--switch-share", type=float, default=0.3)
    parser.add_argument("--synonym-share", type=float, default=0.0)
    parser.add_argument("--scenes", type=int, default=256, help="probe-val scenes scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--probe-at",
        type=int,
        nargs="*",
        default=[],
        help="steps at which to probe too, on the way (the schedule stays the one of --steps)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=0,
        help="build a random-init LLM of this depth on --llm's tokenizer instead (0: --llm's own model)",
    )
    parser.add_argument("--hidden", type=int, default=128, help="its width (MLP twice it), with --layers")
    parser.add_argument("--save", default="", help="write the pretrained LLM and tokenizer to this folder")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from demo.lm_corpus import CorpusStats, LmCorpusConfig, documents
    from experiments.lm_pretrain.loop import PretrainSettings, batches, mean_loss, packed_blocks, pretrain

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    if args.layers:  # another shape, built the way the tiny_models stage builds the recipe's
        from models.tiny_factory import build_tiny_llm
        from models.tiny_specs import TinyLlmSpec

        spec = TinyLlmSpec(hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_layers=args.layers)
        # kept beside the pretrained LLM with --save (to compare initial weights), else a fresh folder
        args.llm = f"{args.save}/random_init" if args.save else tempfile.mkdtemp(prefix="knowledge_probe_")
        build_tiny_llm(tokenizer, spec, args.seed).save_pretrained(args.llm)
    random_init = probe_cra(AutoModel.from_pretrained(args.llm, use_safetensors=True), tokenizer, args.scenes)
    model = AutoModelForCausalLM.from_pretrained(args.llm, use_safetensors=True)
    corpus = LmCorpusConfig(
        seed=args.seed,
        weights=tuple(args.weights),
        code_switched_weight=args.code_switched_weight,
        switch_share=args.switch_share,
        synonym_share=args.synonym_share,
    )
    settings = PretrainSettings(
        args.steps, args.batch_size, args.seq_len, args.lr, 0.01, 30, 1.0, args.steps, 8
    )
    held_out: frozenset = frozenset()  # the probe-val stream is disjoint from the scenes stage's anyway
    validation = list(
        itertools.islice(
            batches(
                packed_blocks(documents(corpus, "validation", held_out), tokenizer, args.seq_len),
                args.batch_size,
            ),
            8,
        )
    )
    stats = CorpusStats()
    began = time.perf_counter()
    train = batches(
        packed_blocks(documents(corpus, "train", held_out, stats), tokenizer, args.seq_len), args.batch_size
    )
    curve: dict[int, dict] = {}

    def probe_on_the_way(step: int, metrics: dict[str, float]) -> None:
        if step in args.probe_at and step < args.steps:
            model.eval()
            curve[step] = probe_cra(model.base_model, tokenizer, args.scenes)
            model.train()
            print(f"[knowledge_probe] step {step}: {json.dumps(curve[step])}", flush=True)

    losses = pretrain(model, train, validation, settings, probe_on_the_way)
    pretrained = probe_cra(model.base_model, tokenizer, args.scenes)
    result = {
        "bench": "knowledge_probe",
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "llm")},
        **{f"{kind}_cra_random_init": scores for kind, scores in random_init.items()},
        **{f"{kind}_cra_pretrained": scores for kind, scores in pretrained.items()},
        "probes_on_the_way": curve,
        "chance": 1 / args.scenes,
        "validation_perplexity": math.exp(losses["final_validation_loss"]),
        "validation_perplexity_before": math.exp(
            mean_loss(AutoModelForCausalLM.from_pretrained(args.llm), validation)
        ),
        "documents_by_kind": stats.documents,
        "pretrain_s": time.perf_counter() - began,
    }
    if args.save:  # a folder the cc probe's --llm reads
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
