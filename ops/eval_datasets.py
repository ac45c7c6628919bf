"""Loaders for the evaluation sets LLM2CLIP reports, from local files (nothing is downloaded).

Every retrieval loader returns a RetrievalSet: images (file paths or encoded bytes), captions, and for
each caption the index of its image. Each loader's docstring names the files it expects; a missing file
or field fails with that file and field in the message.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ops.zero_shot_names import class_names

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    name: str
    images: list[str | bytes]  # local paths, or encoded image bytes (the demo's shards)
    captions: list[str]
    caption_image: list[int]  # caption j describes images[caption_image[j]]
    language: str = "en"

    def __post_init__(self):
        if not self.images:
            raise ValueError(f"{self.name}: no images")
        if len(self.captions) != len(self.caption_image):
            raise ValueError(
                f"{self.name}: {len(self.captions)} captions, {len(self.caption_image)} image indices"
            )
        if self.caption_image and max(self.caption_image) >= len(self.images):
            raise ValueError(f"{self.name}: a caption points past the last image")

    def captions_per_image(self) -> list[list[int]]:
        owned: list[list[int]] = [[] for _ in self.images]
        for caption, image in enumerate(self.caption_image):
            owned[image].append(caption)
        return owned


@dataclasses.dataclass(frozen=True)
class ClassificationSet:
    name: str
    images: list[str]
    labels: list[int]
    class_names: list[str]


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err})") from err
    return rows


def _field(row: dict, name: str, where: str):
    if name not in row:
        raise ValueError(f"{where}: no field {name!r} (fields: {sorted(row)})")
    return row[name]


def _limit(pairs: list[tuple[str, list[str]]], max_images: int) -> list[tuple[str, list[str]]]:
    return pairs[:max_images] if max_images > 0 else pairs


def build_retrieval_set(
    name: str, pairs: list[tuple[str | bytes, list[str]]], language: str = "en"
) -> RetrievalSet:
    images, captions, caption_image = [], [], []
    for index, (image, texts) in enumerate(pairs):
        images.append(image)
        captions.extend(texts)
        caption_image.extend([index] * len(texts))
    return RetrievalSet(name, images, captions, caption_image, language)


def karpathy(
    name: str, annotations: Path, image_root: Path, split: str = "test", max_images: int = 0
) -> RetrievalSet:
    """COCO / Flickr30k Karpathy splits. Files: `dataset_coco.json` or `dataset_flickr30k.json`
    ({"images": [{"filename", "filepath" (COCO only), "split", "sentences": [{"raw"}]}]}) and the
    image folder (`image_root/filepath/filename`). Five captions per image on the test splits."""
    data = _read_json(annotations)
    pairs = []
    for number, entry in enumerate(_field(data, "images", str(annotations))):
        where = f"{annotations}: images[{number}]"
        if _field(entry, "split", where) != split:
            continue
        path = image_root / entry.get("filepath", "") / _field(entry, "filename", where)
        pairs.append(
            (str(path), [_field(s, "raw", where).strip() for s in _field(entry, "sentences", where)])
        )
    if not pairs:
        raise ValueError(f"{annotations}: no images with split {split!r}")
    return build_retrieval_set(name, _limit(pairs, max_images))


def caption_folders(name: str, root: Path, max_images: int = 0) -> RetrievalSet:
    """Urban-1k layout: `root/image/{id}.jpg` and `root/caption/{id}.txt` (one long caption each)."""
    image_dir, caption_dir = root / "image", root / "caption"
    for folder in (image_dir, caption_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not found (expected {root}/image and {root}/caption)")
    pairs = []
    for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        caption = caption_dir / f"{image.stem}.txt"
        if not caption.is_file():
            raise FileNotFoundError(f"{caption}: missing caption for {image}")
        pairs.append((str(image), [caption.read_text(encoding="utf-8").strip()]))
    return build_retrieval_set(name, _limit(pairs, max_images))


def sharegpt4v(name: str, annotations: Path, image_root: Path, max_images: int = 1000) -> RetrievalSet:
    """ShareGPT4V-1k: the first `max_images` entries of a ShareGPT4V caption JSON
    ([{"image": relative path, "conversations": [{"from": "human"}, {"from": "gpt", "value": caption}]}])."""
    pairs = []
    for number, entry in enumerate(_read_json(annotations)):
        where = f"{annotations}: [{number}]"
        answers = [t["value"] for t in _field(entry, "conversations", where) if t.get("from") == "gpt"]
        if not answers:
            raise ValueError(f"{where}: no 'gpt' turn with the caption")
        pairs.append((str(image_root / _field(entry, "image", where)), [answers[0].strip()]))
    return build_retrieval_set(name, _limit(pairs, max_images))


def docci(
    name: str, annotations: Path, image_root: Path, split: str = "test", max_images: int = 0
) -> RetrievalSet:
    """DOCCI: `docci_descriptions.jsonlines` ({"image_file", "description", "split"} per line) and the
    images folder."""
    pairs = []
    for number, row in enumerate(_read_jsonl(annotations), start=1):
        where = f"{annotations}:{number}"
        if _field(row, "split", where) == split:
            pairs.append(
                (str(image_root / _field(row, "image_file", where)), [_field(row, "description", where)])
            )
    if not pairs:
        raise ValueError(f"{annotations}: no rows with split {split!r}")
    return build_retrieval_set(name, _limit(pairs, max_images))


def xm3600(
    name: str, annotations: Path, image_root: Path, language: str, max_images: int = 0
) -> RetrievalSet:
    """Crossmodal-3600: `captions.jsonl` ({"image/key": key, "<lang>": {"caption": [...]}} per line) and
    `image_root/{key}.jpg`."""
    pairs = []
    for number, row in enumerate(_read_jsonl(annotations), start=1):
        where = f"{annotations}:{number}"
        captions = _field(_field(row, language, where), "caption", f"{where}: {language}")
        pairs.append(
            (str(image_root / f"{_field(row, 'image/key', where)}.jpg"), [c.strip() for c in captions])
        )
    return build_retrieval_set(name, _limit(pairs, max_images), language)


def caption_tsv(
    name: str,
    captions_file: Path,
    image_root: Path,
    language: str,
    ids_file: Path | None = None,
    max_images: int = 0,
) -> RetrievalSet:
    """COCO-CN / Flickr30k-CN style: lines `image_id#n<TAB>caption`, images `image_root/{image_id}.jpg`;
    with ids_file (one image id per line, e.g. the test split), only those images, in that order."""
    if not captions_file.is_file():
        raise FileNotFoundError(f"{captions_file}: not found")
    by_image: dict[str, list[str]] = {}
    for number, line in enumerate(captions_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{captions_file}:{number}: expected 'image_id#n<TAB>caption'")
        ref, caption = line.split("\t", 1)
        by_image.setdefault(ref.split("#", 1)[0], []).append(caption.strip())
    order = list(by_image)
    if ids_file is not None:
        if not ids_file.is_file():
            raise FileNotFoundError(f"{ids_file}: not found")
        order = [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        unknown = [i for i in order if i not in by_image]
        if unknown:
            raise ValueError(f"{ids_file}: image ids without captions in {captions_file}: {unknown[:5]}")
    pairs = [(str(image_root / f"{image_id}.jpg"), by_image[image_id]) for image_id in order]
    return build_retrieval_set(name, _limit(pairs, max_images), language)


def image_folder_classes(
    name: str, root: Path, max_per_class: int = 0, names_file: str = ""
) -> ClassificationSet:
    """ImageNet-style `root/<class folder>/*.jpg`; class names by ops.zero_shot_names.class_names (CLIP's
    names for ImageNet's WordNet-id folders, a names file, or the folder names)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class folders")
    images, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:max_per_class] if max_per_class > 0 else files
        images.extend(str(p) for p in files)
        labels.extend([label] * len(files))
    return ClassificationSet(name, images, labels, class_names(root, [p.name for p in classes], names_file))
