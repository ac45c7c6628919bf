"""The evaluate stage's work: load the sets, encode images (vision tower) and captions (frozen LLM
encoder, then the adapter), score (score_sets: a Ray task with the stage's CPUs and GPU, or in-process
from the CLI), and write the report (write_report, on the driver). Plain torch."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from ops import eval_datasets
from ops.artifact_dir import ArtifactDir
from ops.image_decode import ImageDecodeError, decode_rgb
from ops.image_transforms import eval_transform
from ops.retrieval_metrics import benchmark_recalls, caption_retrieval_accuracy, zero_shot_accuracy
from ops.stage import StageContext
from ops.zero_shot_names import clip_imagenet_templates


def load_retrieval_set(spec, shards_uri: str | None, scenes_split: str) -> eval_datasets.RetrievalSet:
    images = Path(spec.images) if spec.images else Path(spec.annotations).parent
    annotations = Path(spec.annotations)
    if spec.format == "karpathy":
        return eval_datasets.karpathy(spec.name, annotations, images, spec.split, spec.max_images)
    if spec.format == "caption_folders":
        return eval_datasets.caption_folders(spec.name, annotations, spec.max_images)
    if spec.format == "sharegpt4v":
        return eval_datasets.sharegpt4v(spec.name, annotations, images, spec.max_images or 1000)
    if spec.format == "docci":
        return eval_datasets.docci(spec.name, annotations, images, spec.split, spec.max_images)
    if spec.format == "xm3600":
        return eval_datasets.xm3600(spec.name, annotations, images, spec.language, spec.max_images)
    if spec.format == "caption_tsv":
        ids = Path(spec.ids_file) if spec.ids_file else None
        return eval_datasets.caption_tsv(spec.name, annotations, images, spec.language, ids, spec.max_images)
    if shards_uri is None:
        raise ValueError(f"benchmark {spec.name}: format {spec.format} reads the download stage's shards")
    return scenes_set(spec, shards_uri, scenes_split)


def scenes_set(spec, shards_uri: str, split: str) -> eval_datasets.RetrievalSet:
    """The demo's held-out scenes: short alt-text captions (scenes_short) or dense ones (scenes_long)."""
    from ops.captioned_shards import ORIGINAL, caption_of, iter_shard_folder

    field = ORIGINAL if spec.format == "scenes_short" else "dense_caption"
    pairs = []
    for _, sample in iter_shard_folder(shards_uri):
        text = caption_of(sample, field)
        if "jpg" in sample and (sample.get("json") or {}).get("split") == split and text:
            pairs.append((sample["jpg"], [text]))
    if spec.max_images > 0:
        pairs = pairs[: spec.max_images]
    if not pairs:
        raise ValueError(f"{shards_uri}: no samples with split {split!r} for benchmark {spec.name}")
    return eval_datasets.build_retrieval_set(spec.name, pairs)


class Encoders:
    """The exported LLM2CLIP model and the frozen LLM encoder, with batched feature helpers."""

    def __init__(self, model_uri: str, encoder_uri: str, config):
        from models.llm2clip_export import load_export
        from models.text_encoder_io import open_text_encoder

        self.device = torch.device("cuda" if config.use_gpu else "cpu")
        self.batch_size = config.batch_size
        # PIL decodes and resizes without the GIL: threads give the forward a batch per decode of one
        self.decoders = ThreadPoolExecutor(max(1, config.num_cpus), thread_name_prefix="evaluate-decode")
        with ArtifactDir(model_uri).local_copy("") as folder:
            model, self.transform = load_export(folder)
        self.model = model.to(self.device)
        encoder, self.tokenizer = open_text_encoder(
            encoder_uri, config.encoder_preset, trust_remote_code=config.trust_remote_code
        )
        self.encoder = encoder.to(self.device).eval()

    @torch.no_grad()
    def image_features(self, images: list) -> torch.Tensor:
        def pixels_of(image) -> torch.Tensor:
            return eval_transform(_open(image), self.transform)

        batches = [images[s : s + self.batch_size] for s in range(0, len(images), self.batch_size)]
        out = []
        # Batch i + 1 decodes on the threads while batch i runs through the tower.
        decoding = [self.decoders.submit(pixels_of, image) for image in batches[0]] if batches else []
        for index in range(len(batches)):
            pixels = torch.stack([future.result() for future in decoding])
            following = batches[index + 1] if index + 1 < len(batches) else []
            decoding = [self.decoders.submit(pixels_of, image) for image in following]
            out.append(self.model.get_image_features(pixels.to(self.device)).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def llm_features(self, captions: list[str]) -> torch.Tensor:
        return self.encoder.encode(self.tokenizer, captions, batch_size=self.batch_size).float()

    @torch.no_grad()
    def text_features(self, llm: torch.Tensor) -> torch.Tensor:
        out = [
            self.model.get_text_features(llm[s : s + self.batch_size].to(self.device)).float().cpu()
            for s in range(0, len(llm), self.batch_size)
        ]
        return torch.cat(out)


def _open(image: bytes | str | Path) -> Image.Image:
    """Decoded as training decodes (ops.image_transforms.decode_rgb: 16-bit scaling, the pixel limit)."""
    where = "an image of the set" if isinstance(image, bytes) else str(image)
    try:
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        return decode_rgb(data)
    except (OSError, ImageDecodeError) as err:
        raise ValueError(f"{where}: cannot be decoded as an image ({err})") from err


def retrieval_metrics(encoders: Encoders, data: eval_datasets.RetrievalSet) -> tuple[dict[str, float], dict]:
    images = encoders.image_features(data.images)
    llm = encoders.llm_features(data.captions)
    text = encoders.text_features(llm)
    # the standard (CLIP_benchmark) tie rule, with the strict figures and the tied queries beside it
    metrics = benchmark_recalls(images, text, torch.tensor(data.caption_image))
    owned = data.captions_per_image()
    pairs = [(captions[0], captions[1]) for captions in owned if len(captions) >= 2]
    if len(pairs) >= 2:  # CRA: caption 1 retrieves caption 2 among all second captions (LLM features)
        first, second = zip(*pairs)
        metrics["cra"] = caption_retrieval_accuracy(llm[list(first)], llm[list(second)])
    metrics["images"] = float(len(data.images))
    metrics["captions"] = float(len(data.captions))
    sample = {"images": images, "text": text, "first_caption": [c[0] for c in owned]}
    return metrics, sample


def zero_shot_metrics(encoders: Encoders, spec) -> dict[str, float]:
    data = eval_datasets.image_folder_classes(
        spec.name, Path(spec.root), spec.max_per_class, spec.class_names
    )
    templates = spec.templates or clip_imagenet_templates()
    prompts = [template.format(name) for name in data.class_names for template in templates]
    text = torch.nn.functional.normalize(encoders.text_features(encoders.llm_features(prompts)), dim=-1)
    per_class = text.reshape(len(data.class_names), len(templates), -1).mean(dim=1)
    metrics = zero_shot_accuracy(encoders.image_features(data.images), per_class, torch.tensor(data.labels))
    metrics["images"] = float(len(data.images))
    return metrics


def score_sets(config, model_uri: str, encoder_uri: str, shards_uri: str | None) -> tuple[dict, tuple | None]:
    """(results per set, (first retrieval set's name, its heatmap sample) or None): the model work, where
    the stage's resources are (a Ray task) or in the calling process."""
    encoders = Encoders(model_uri, encoder_uri, config)
    results: dict[str, dict[str, float]] = {}
    heatmap = None
    for spec in config.benchmarks:
        data = load_retrieval_set(spec, shards_uri, config.scenes_split)
        results[spec.name], sample = retrieval_metrics(encoders, data)
        shown = {k: v for k, v in results[spec.name].items() if not k.endswith("_strict")}
        print(f"[evaluate] {spec.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()), flush=True)
        if heatmap is None:
            count = min(config.heatmap_samples, len(sample["first_caption"]))
            firsts = sample["first_caption"][:count]
            heatmap = (
                spec.name,
                {
                    "images": sample["images"][:count],
                    "text": sample["text"][firsts],
                    "first_caption": list(range(count)),
                },
            )
    for spec in config.zero_shot:
        results[spec.name] = zero_shot_metrics(encoders, spec)
        line = ", ".join(f"{k} {v:.3f}" for k, v in results[spec.name].items())
        print(f"[evaluate] {spec.name}: {line}", flush=True)
    encoders.decoders.shutdown()
    return results, heatmap


def write_report(results: dict, heatmap: tuple | None, config, model_uri: str, ctx: StageContext) -> int:
    """table.md/.html and the plots into the artifact and the MLflow run; returns the images scored."""
    from pipelines.evaluate.report import heatmap_png, recall_bars_png, tables

    model_path = Path(model_uri.rstrip("/"))
    title = model_path.parent.name if model_path.name == "export" else model_path.name  # the stage key
    markdown, html = tables(results, title=title)
    ctx.artifact.write_bytes_atomic("table.md", markdown.encode())
    ctx.artifact.write_bytes_atomic("table.html", html.encode())
    ctx.log_text(markdown, "table.md")
    ctx.log_text(html, "table.html")
    with tempfile.TemporaryDirectory(prefix="evaluate-") as folder:
        plots = {"recall_bars.png": recall_bars_png(results)}
        if heatmap is not None:
            name, sample = heatmap
            plots[f"heatmap_{name}.png"] = heatmap_png(sample, config.heatmap_samples, name)
        for file_name, png in plots.items():
            if png is None:
                continue
            ctx.artifact.write_bytes_atomic(file_name, png)
            (Path(folder) / file_name).write_bytes(png)
            ctx.log_file(str(Path(folder) / file_name))
    return int(sum(r.get("images", 0) for r in results.values()))
