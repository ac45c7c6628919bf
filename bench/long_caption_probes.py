"""Probes for tuning the long-caption experiment on validation data only (never the held-out scenes).

    python -m bench.long_caption_probes vision --arms clip_77,clip_long --tokenizer LLM_FOLDER \
        --scenes 8192 --image-px 48 --patch-px 16 --width 128 --layers 4 --steps 3000 --lr 5e-4
    python -m bench.long_caption_probes vision --arms llm2clip --llm FINETUNED_ENCODER_FOLDER ...
    python -m bench.long_caption_probes cc --run ARTIFACTS --lr 1e-3 --steps 300 [--query-side random]

vision: can the tiny vision tower learn the rich scenes at all? Renders fresh rich scenes in memory (a
"probe-train" stream and a "probe-val" stream, neither the scenes stage's splits), trains one arm per
name with the experiment's own code (experiments/long_caption/arms.py) and prints validation and training
R@1. The text-tower arms need no LLM; base_llm/llm2clip use --llm (a folder with an LLM).

cc: does caption-contrastive fine-tuning lift an LLM's CRA? Takes a finished experiment run's
lm_pretrain LLM and finetune_text training pairs, holds out one pair in eight (by key) as validation,
optionally runs MNTP, then LoRA CC with the stage's loop, and prints the loss curve, the validation CRA
and the mean pairwise cosine of the pooled captions (how collapsed the features are) before and after.
"""

from __future__ import annotations

import argparse
import io
import time
import zlib
from pathlib import Path

import torch


def _vision(args) -> None:
    from transformers import AutoTokenizer

    from demo import rich_scenes
    from experiments.long_caption.arms import ArmSettings, build_arm, evaluate_arm, train_arm
    from experiments.long_caption.config import LongCaptionExperimentConfig
    from experiments.long_caption.samples import Sample, captioned
    from models.text_tower_clip import TextTowerSpec
    from models.tiny_factory import build_tiny_vision_tower
    from models.tiny_specs import TinyVisionSpec
    from ops.image_transforms import CLIP_MEAN, CLIP_STD, ImageTransformConfig

    rich_scenes.BOTTOM_OBJECTS = (1, args.bottom)

    def samples(stream: str, count: int) -> list[Sample]:
        rows = []
        for i in range(count):
            scene = rich_scenes.sample_rich_scene(0, stream, i, 4, f"{stream}-{i}")
            buffer = io.BytesIO()
            rich_scenes.render_rich_scene(scene, args.render_px).save(buffer, format="JPEG", quality=90)
            long = rich_scenes.rich_dense_caption(scene)
            rows.append(
                Sample(
                    buffer.getvalue(), rich_scenes.rich_short_caption(scene, 0), long, None, None, str(i // 4)
                )
            )
        return rows

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    encoders = {}
    if args.llm:
        from transformers import AutoModel

        from models.text_encoder import LLMTextEncoder
        from models.text_encoder_config import TextEncoderConfig

        encoder = LLMTextEncoder(
            AutoModel.from_pretrained(args.llm).eval(), TextEncoderConfig(max_length=320)
        )
        encoders = {"base": encoder.eval(), "finetuned": encoder.eval()}
    config = LongCaptionExperimentConfig()
    transform = ImageTransformConfig(size_px=args.image_px, mean=CLIP_MEAN, std=CLIP_STD)
    fit = samples("probe-train", args.scenes)
    train, _ = captioned(fit, transform, encoders, tokenizer, config)
    seen, _ = captioned(fit[:128], transform, encoders, tokenizer, config)
    validation, _ = captioned(samples("probe-val", 128), transform, encoders, tokenizer, config)
    spec = TinyVisionSpec(
        hidden_size=args.width,
        intermediate_size=2 * args.width,
        num_layers=args.layers,
        num_heads=2,
        image_size_px=args.image_px,
        patch_size_px=args.patch_px,
    )
    tower, _ = build_tiny_vision_tower(spec, 0)
    settings = ArmSettings(
        max_steps=args.steps,
        batch_size=args.batch,
        learning_rate=args.lr,
        weight_decay=0.0,
        warmup_steps=10,
        max_grad_norm=1.0,
        dense_ratio=0.5,
        adapter_width=128,
        adapter_depth=2,
        projection_dim=64,
        text_tower=TextTowerSpec(128, 2, 2, 77),
        clip_long_max_tokens=320,
    )
    for arm in args.arms.split(","):
        began = time.perf_counter()
        model = build_arm(arm, tower, train, settings, tokenizer, 0)
        losses = train_arm(arm, model, train, settings, 0)
        val, tr = evaluate_arm(arm, model, validation), evaluate_arm(arm, model, seen)
        head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10) :]
        print(
            f"{arm}: {time.perf_counter() - began:.0f} s, loss {sum(head) / len(head):.2f} -> "
            f"{sum(tail) / len(tail):.2f}; validation long R@1 I2T {val['long_i2t_r1']:.3f} "
            f"T2I {val['long_t2i_r1']:.3f}; training long R@1 I2T {tr['long_i2t_r1']:.3f}"
        )


def _cc(args) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import LoraSpec, TextEncoderConfig
    from models.text_encoder_io import apply_lora
    from ops.retrieval_metrics import caption_retrieval_accuracy
    from pipelines.finetune_text.batches import pair_batches
    from pipelines.finetune_text.loop import (
        LoopSettings,
        MntpSettings,
        build_optimizer,
        mntp_steps,
        train_steps,
    )

    root = Path(args.run)
    (folder,) = [Path(args.llm)] if args.llm else root.glob("lm_pretrain/*/llm")
    (pairs_path,) = root.glob("finetune_text/*/pairs/train.parquet")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    causal = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    pairs = pq.read_table(pairs_path)
    held = pc.equal(pc.bit_wise_and(pa_crc(pairs["key"]), 7), 0)
    validation = pairs.filter(pc.and_(held, pc.equal(pairs["kind"], "short_long")))
    if args.candidates:  # CRA falls as candidates grow: compare runs at one count
        validation = validation.slice(0, args.candidates)
    train = pairs.filter(pc.invert(held)).drop_columns(["key", "kind"])
    config = TextEncoderConfig(max_length=320, bidirectional=not args.causal)

    def score(encoder) -> str:
        encoder.eval()
        with torch.no_grad():
            first = encoder.encode(tokenizer, validation["caption_1"].to_pylist())
            second = encoder.encode(tokenizer, validation["caption_2"].to_pylist())
        n = first.shape[0]
        cosine = ((first @ first.T).sum() - n) / (n * n - n)
        return f"validation CRA {caption_retrieval_accuracy(first, second):.3f} (mean cosine {cosine:.3f})"

    began = time.perf_counter()
    if args.mntp_steps:
        lora = apply_lora(causal, LoraSpec(rank=16, alpha=32, dropout=0.0))
        texts = (b["query_side"] + b["key_side"] for b in pair_batches(train, 16, 0, 1, 0))
        mntp = MntpSettings(args.mntp_steps, 5e-4, 0.2, "_", 320, 0)
        mntp_steps(lora, tokenizer, texts, mntp, lambda s, m: None, torch.device("cpu"))
        causal = lora.merge_and_unload()
    backbone = causal.model

    def knowledge(model) -> str:  # the experiment's cross-lingual and synonym probes, on probe-val scenes
        if not args.knowledge_scenes:
            return ""
        from bench.knowledge_probe import probe_cra

        scores = probe_cra(model, tokenizer, args.knowledge_scenes, bidirectional=not args.causal)
        return "; centered CRA: " + ", ".join(f"{kind} {s['centered']:.3f}" for kind, s in scores.items())

    base = score(LLMTextEncoder(backbone, config))
    print(f"{len(validation)} validation pairs; base: {base}{knowledge(backbone)}", flush=True)
    lora = LoraSpec(rank=args.rank, alpha=2 * args.rank, dropout=0.0)
    only = [int(i) for i in args.lora_layers.split(",")] if args.lora_layers else None
    encoder = LLMTextEncoder(apply_lora(backbone, lora, only), config)
    settings = LoopSettings(
        temperature=args.temperature,
        learning_rate=args.lr,
        weight_decay=0.0,
        warmup_steps=5,
        max_steps=args.steps,
        max_grad_norm=1.0,
        seed=0,
    )
    optimizer, scheduler = build_optimizer(encoder, settings)
    losses: list[float] = []
    batches = pair_batches(train, 32, rank=0, world=1, seed=0, query_side=args.query_side)
    record = lambda step, metrics: losses.append(round(metrics["loss"], 2))  # noqa: E731
    train_steps(encoder, tokenizer, batches, settings, optimizer, scheduler, 0, record, torch.device("cpu"))
    every = max(1, args.steps // 8)
    print(
        f"CC {args.steps} steps at lr {args.lr} ({time.perf_counter() - began:.0f} s): loss {losses[::every]}"
    )
    print(f"after CC: {score(encoder)}{knowledge(encoder.backbone)}")


def pa_crc(keys):
    import pyarrow as pa

    return pa.array([zlib.crc32(k.encode()) for k in keys.to_pylist()], pa.int64())


def main() -> None:
    from pipelines.finetune_text.config import QUERY_SIDES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="probe", required=True)
    vision = commands.add_parser("vision", help="vision-tower learnability on rich scenes")
    vision.add_argument("--arms", default="clip_77,clip_long")
    vision.add_argument("--steps", type=int, default=300)
    vision.add_argument("--lr", type=float, default=2e-3)
    vision.add_argument("--scenes", type=int, default=1024, help="training scenes")
    vision.add_argument(
        "--bottom", type=int, default=4, help="most objects in the two rows siblings differ in"
    )
    vision.add_argument("--batch", type=int, default=32)
    vision.add_argument("--render-px", type=int, default=96, help="scene side as rendered (JPEG)")
    vision.add_argument("--image-px", type=int, default=64, help="the tower's input side")
    vision.add_argument("--patch-px", type=int, default=16)
    vision.add_argument("--width", type=int, default=64, help="the tower's hidden size")
    vision.add_argument("--layers", type=int, default=2)
    vision.add_argument("--tokenizer", required=True, help="a folder with the tokenizer (tiny_models' llm/)")
    vision.add_argument("--llm", default="", help="a folder with the LLM for base_llm/llm2clip")
    cc = commands.add_parser("cc", help="caption-contrastive fine-tuning of a pretrained tiny LLM")
    cc.add_argument("--run", required=True, help="artifact root of a long-caption experiment run")
    cc.add_argument("--llm", default="", help="a pretrained LLM folder instead of the run's lm_pretrain one")
    cc.add_argument("--lr", type=float, default=5e-4)
    cc.add_argument("--steps", type=int, default=300)
    cc.add_argument("--temperature", type=float, default=0.05)
    cc.add_argument("--mntp-steps", type=int, default=0)
    cc.add_argument("--candidates", type=int, default=0, help="score CRA among this many pairs (0: all)")
    cc.add_argument("--query-side", default="first", choices=QUERY_SIDES)
    cc.add_argument("--lora-layers", default="", help="LoRA on these layers only, e.g. 1 (default: all)")
    cc.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha twice it, as the recipe's)")
    cc.add_argument(
        "--knowledge-scenes",
        type=int,
        default=0,
        help="also score the cross-lingual and synonym probes on this many probe-val scenes",
    )
    cc.add_argument(
        "--causal", action="store_true", help="keep the causal mask when encoding (default: bidirectional)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    (_vision if args.probe == "vision" else _cc)(args)


if __name__ == "__main__":
    main()
