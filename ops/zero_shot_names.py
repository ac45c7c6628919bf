"""Class names and prompts for zero-shot classification from an image folder: ImageNet's WordNet-id
folders become CLIP's class names, a names file names any other folder, and folder names that look like
ids without either are an error, never a silent near-chance score ("a photo of a n01440764.")."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

IMAGENET_DATA = Path(__file__).parent / "data" / "imagenet_zero_shot.json"
ID_LIKE = re.compile(r"^(n\d{8}|\d+)$")  # WordNet ids (n01440764) and bare class numbers


@functools.cache
def imagenet_metadata() -> dict:
    """wnids (standard order), class_names (CLIP's, in that order) and templates (CLIP's 80)."""
    return json.loads(IMAGENET_DATA.read_text(encoding="utf-8"))


def clip_imagenet_templates() -> tuple[str, ...]:
    return tuple(imagenet_metadata()["templates"])


def _names_file(path: Path, folders: list[str]) -> list[str]:
    """A .json {folder: name} or a text file of one name per line, in sorted folder order."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class-names file not found")
    if path.suffix == ".json":
        mapping = json.loads(path.read_text(encoding="utf-8"))
        missing = [folder for folder in folders if folder not in mapping]
        if missing:
            raise ValueError(f"{path}: no name for class folders {missing[:5]}")
        return [str(mapping[folder]) for folder in folders]
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != len(folders):
        raise ValueError(
            f"{path}: {len(names)} names for {len(folders)} class folders (one per line, sorted)"
        )
    return names


def class_names(root: Path, folders: list[str], names_file: str = "") -> list[str]:
    """The prompt name of each class folder (sorted folder names): from names_file when given; CLIP's
    ImageNet names when every folder is an ImageNet-1k WordNet id; else the folder name ('_' -> ' ')."""
    if names_file:
        return _names_file(Path(names_file), folders)
    metadata = imagenet_metadata()
    by_wnid = dict(zip(metadata["wnids"], metadata["class_names"]))
    if all(folder in by_wnid for folder in folders):
        return [by_wnid[folder] for folder in folders]
    unknown_ids = [folder for folder in folders if ID_LIKE.match(folder) and folder not in by_wnid]
    if unknown_ids:
        raise ValueError(
            f"{root}: class folders are named by id ({', '.join(unknown_ids[:3])}, ...), not by class name, "
            "and not all are ImageNet-1k WordNet ids; give zero_shot[].class_names: a .json "
            "{folder: name} or a text file of one name per line in sorted folder order"
        )
    return [folder.replace("_", " ") for folder in folders]
