"""The export folder of a trained LLM2CLIP model, written by train_vision and the converter, read by
evaluate and users. It is a Hugging Face model folder:

  config.json                 LLM2CLIPConfig, with `auto_map` naming the modeling file below
  model.safetensors           the weights
  modeling_llm2clip.py        a copy of models/llm2clip.py, and
  timm_tower.py               of models/timm_tower.py (which it imports): `AutoModel.from_pretrained(folder,
                              trust_remote_code=True)` loads the model on a machine without this project
  preprocessor_config.json    a complete CLIPImageProcessor file at the tower's resolution and normalisation

Where the project is installed, importing models.llm2clip registers the model type, and `AutoModel`
loads the folder without remote code; `load_export` is the project's own loader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models import llm2clip, timm_tower
from models.llm2clip import LLM2CLIPModel
from models.vision_tower import PREPROCESSOR_FILE
from ops.image_transforms import ImageTransformConfig

MODELING_FILE = "modeling_llm2clip.py"
# The files an export ships, and the project modules they are copies of.
CODE_FILES = {MODELING_FILE: llm2clip.__file__, "timm_tower.py": timm_tower.__file__}
AUTO_MAP = {
    "AutoConfig": f"{Path(MODELING_FILE).stem}.LLM2CLIPConfig",
    "AutoModel": f"{Path(MODELING_FILE).stem}.LLM2CLIPModel",
}
BICUBIC = 3  # PIL's code for bicubic resampling, as image processors store it


def clip_image_processor(transform: ImageTransformConfig) -> dict:
    """CLIPImageProcessor's settings for what ops.image_transforms.eval_transform does: resize the short
    side to the tower's size (bicubic), centre-crop a square, scale to [0, 1], normalise."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": transform.size_px},
        "resample": BICUBIC,
        "do_center_crop": True,
        "crop_size": {"height": transform.size_px, "width": transform.size_px},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(transform.mean),
        "image_std": list(transform.std),
    }


def save_export(model: LLM2CLIPModel, transform: ImageTransformConfig, folder: str | Path) -> None:
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = AUTO_MAP
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name, source in CODE_FILES.items():
        shutil.copyfile(source, folder / name)
    processor = clip_image_processor(transform)
    (folder / PREPROCESSOR_FILE).write_text(json.dumps(processor, indent=2) + "\n")


def load_export(folder: str | Path) -> tuple[LLM2CLIPModel, ImageTransformConfig]:
    """(model in eval mode, the transform its images need) from a local export folder."""
    folder = Path(folder)
    processor_file = folder / PREPROCESSOR_FILE
    if not processor_file.is_file():
        raise FileNotFoundError(f"{folder}: no {PREPROCESSOR_FILE}; not an LLM2CLIP export folder")
    processor = json.loads(processor_file.read_text())
    # Exports before the complete CLIPImageProcessor file held only image_size, image_mean, image_std.
    size = processor["crop_size"]["height"] if "crop_size" in processor else processor["image_size"]
    transform = ImageTransformConfig(
        size_px=int(size), mean=tuple(processor["image_mean"]), std=tuple(processor["image_std"])
    )
    return LLM2CLIPModel.from_pretrained(folder).eval(), transform
