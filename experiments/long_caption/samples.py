"""The experiment's data: samples read from the download stage's shards, the validation split carved by
family, captions encoded once by the three LLMs (and tokenized for the text towers), and the LLMs' CRA."""

from __future__ import annotations

import dataclasses
import zlib

import torch

from experiments.long_caption.config import LongCaptionExperimentConfig


@dataclasses.dataclass(frozen=True)
class Sample:
    jpg: bytes
    short: str
    long: str
    l2: str | None  # the second language's dense caption (rich scenes)
    syn: str | None  # the dense caption with every scene word as its synonym (rich scenes)
    paraphrase: str | None  # the dense caption reworded (rich scenes): CRA's query
    family: str  # scenes sharing a top half; validation is carved by family


def read_samples(shards_uri: str, config: LongCaptionExperimentConfig):
    """(train, held_out, rejected): Samples by split, and the samples that cannot take part, with the
    reason."""
    from ops.captioned_shards import ORIGINAL, caption_of, iter_shard_folder

    train, held_out, rejected = [], [], []
    for tar_path, sample in iter_shard_folder(shards_uri):
        meta = sample.get("json") or {}
        long = caption_of(sample, config.dense_caption_field)
        lacking = [part for part in ("jpg", "txt") if part not in sample]
        lacking += [] if long else ["dense_caption"]
        if lacking:
            rejected.append(
                {"key": sample["key"], "reason": f"missing_{'_and_'.join(lacking)}", "shard": tar_path}
            )
            continue
        family = meta.get("family")
        row = Sample(
            jpg=sample["jpg"],
            short=caption_of(sample, ORIGINAL) or "",
            long=long,
            l2=meta.get("dense_caption_l2"),
            syn=meta.get("dense_caption_syn"),
            paraphrase=meta.get("paraphrase"),
            family=str(family if family is not None else meta.get("scene_key", sample["key"])),
        )
        (held_out if meta.get("split") == config.eval_split_value else train).append(row)
    return train, held_out, rejected


def split_validation(train: list[Sample], share: float) -> tuple[list[Sample], list[Sample]]:
    """(fit, validation): whole families by a hash of their id, so no sibling of a validation scene
    is trained on."""
    if share == 0:
        return train, []
    chosen = [s for s in train if zlib.crc32(s.family.encode()) % 10_000 < share * 10_000]
    return [s for s in train if s not in chosen], chosen


def captioned(samples: list[Sample], transform, encoders, tokenizer, config):
    from experiments.long_caption.arms import TEXT_TOWER_ARMS, CaptionedImages
    from models.text_tower_clip import tokenize_for_clip
    from ops.image_decode import decode_rgb
    from ops.image_transforms import eval_transform

    pixels = torch.stack([eval_transform(decode_rgb(s.jpg), transform) for s in samples])
    texts = {"short": [s.short for s in samples], "long": [s.long for s in samples]}
    for kind in ("l2", "syn"):
        if all(getattr(s, kind) for s in samples):
            texts[kind] = [getattr(s, kind) for s in samples]
    features, tokens, cut = {}, {}, {}
    with torch.no_grad():
        for name, encoder in encoders.items():
            features[name] = {
                kind: encoder.encode(tokenizer, captions, batch_size=config.encode_batch_size).float()
                for kind, captions in texts.items()
            }
    contexts = {"clip_77": config.clip_max_tokens, "clip_long": config.clip_long_max_tokens}
    for arm in TEXT_TOWER_ARMS:
        tokens[arm] = {}
        for kind, captions in texts.items():
            tokens[arm][kind], share = tokenize_for_clip(tokenizer, captions, contexts[arm])
            if arm == "clip_77":
                cut[kind] = share
            elif share > 0:
                raise ValueError(
                    f"long_caption_experiment: {100 * share:.0f}% of the {kind} captions exceed "
                    f"clip_long_max_tokens={config.clip_long_max_tokens}; raise it"
                )
    return CaptionedImages(pixels, features, tokens), cut


def _encoded_pairs(encoders, tokenizer, queries: list[str], keys: list[str], config):
    """Per LLM name: (query features, key features), float32."""
    with torch.no_grad():
        for name, encoder in encoders.items():
            first = encoder.encode(tokenizer, queries, batch_size=config.encode_batch_size).float()
            second = encoder.encode(tokenizer, keys, batch_size=config.encode_batch_size).float()
            yield name, first, second


def llm_cra(encoders, tokenizer, samples: list[Sample], config) -> dict[str, float]:
    """CRA of each LLM on the held-out scenes: each query caption (the paraphrase where the scenes have
    one, else the short caption) must retrieve its own dense caption among all of them."""
    from ops.retrieval_metrics import caption_retrieval_accuracy

    queries = [s.paraphrase or s.short for s in samples]
    keys = [s.long for s in samples]
    return {
        f"cra_{name}": caption_retrieval_accuracy(first, second)
        for name, first, second in _encoded_pairs(encoders, tokenizer, queries, keys, config)
    }


PROBES = {"l2": "cross-lingual", "syn": "synonym"}  # caption kind -> its probe's name


def knowledge_probe(encoders, tokenizer, samples: list[Sample], kind: str, config) -> dict[str, float]:
    """A probe of what the LLMs know, before any vision training: each `kind` caption ('l2': the second
    language's dense caption; 'syn': the dense caption in synonyms) must retrieve its scene's English
    dense caption among all of them, per LLM ({kind}_cra_<name>, and centered). Run on the validation
    scenes, so a change to the LM corpus or size is scored without touching held-out ones."""
    from ops.retrieval_metrics import caption_retrieval_accuracy

    pairs = [(getattr(s, kind), s.long) for s in samples if getattr(s, kind)]
    if len(pairs) < 2:
        return {}
    queries, keys = (list(x) for x in zip(*pairs))
    scores = {}
    for name, first, second in _encoded_pairs(encoders, tokenizer, queries, keys, config):
        scores[f"{kind}_cra_{name}"] = caption_retrieval_accuracy(first, second)
        # Each side's mean removed: a small LM's pooled features share one large direction, under which
        # one key wins every query (CRA exactly 1/N) whatever the content says.
        centered = caption_retrieval_accuracy(first - first.mean(0), second - second.mean(0))
        scores[f"{kind}_cra_centered_{name}"] = centered
    return scores


def unseen_token_shares(tokenizer, trained: list[Sample], scored: list[Sample]) -> dict[str, float]:
    """Per caption kind scored ('l2', 'syn'): the share of its tokens (of the `scored` samples) that no
    caption of the `trained` samples holds, i.e. that neither CC fine-tuning (alt-text, dense caption,
    paraphrase) nor vision training (alt-text, dense caption) ever saw."""
    seen: set[int] = set()
    for sample in trained:
        for text in (sample.short, sample.long, sample.paraphrase):
            if text:
                seen.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    shares = {}
    for kind in PROBES:
        texts = [getattr(s, kind) for s in scored if getattr(s, kind)]
        ids = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        if ids:
            shares[f"{kind}_unseen_token_share"] = sum(i not in seen for i in ids) / len(ids)
    return shares


def load_encoders(tuned_uri: str, base_uri: str, random_uri: str):
    """The fine-tuned encoder; the base LLM it was tuned from and tiny_models' random-init LLM, pooled
    the same way (same encoder settings)."""
    from transformers import AutoModel

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_io import load_text_encoder
    from ops.artifact_dir import ArtifactDir

    with ArtifactDir(tuned_uri).local_copy("") as folder:
        tuned, tokenizer = load_text_encoder(folder)
    encoders = {"finetuned": tuned.eval()}
    for name, uri in (("base", base_uri), ("random_init", random_uri)):
        with ArtifactDir(uri).local_copy("") as folder:
            backbone = AutoModel.from_pretrained(folder, use_safetensors=True)
        encoders[name] = LLMTextEncoder(backbone.eval(), tuned.config)
    return encoders, tokenizer
