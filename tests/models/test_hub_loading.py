"""An export loads the Hub way: the model card's snippet (AutoModel with remote code, CLIPImageProcessor)
in a process that never imports this project, AutoModel through the registered type without remote code,
and the project's own loader; all three give the same features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from models.llm2clip_export import AUTO_MAP, save_export
from models.tiny_factory import build_tiny_vision_tower
from models.tiny_specs import TinyVisionSpec
from ops.image_transforms import ImageTransformConfig
from testbed.hub_snippet import run_card_snippet, run_project_loaders

SIZE = 64  # the tiny tower's resolution


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    tower, _ = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    config = LLM2CLIPConfig(llm_dim=16, adapter_width=16, adapter_depth=2, projection_dim=8)
    model = LLM2CLIPModel.with_vision_tower(config, tower).eval()
    save_export(model, ImageTransformConfig(size_px=SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25)), folder)
    # Not square and not at the tower's size: the processor's resize and crop are part of what is compared.
    image = folder.parent / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(image)
    return folder, image, rng.standard_normal((3, 16)).astype(np.float32)


def test_the_export_is_a_complete_hub_folder(export):
    folder, _, _ = export
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llm2clip" and config["auto_map"] == AUTO_MAP
    assert (folder / "modeling_llm2clip.py").is_file() and (folder / "timm_tower.py").is_file()
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "CLIPImageProcessor"
    assert processor["size"] == {"shortest_edge": SIZE}
    assert processor["crop_size"] == {"height": SIZE, "width": SIZE}
    assert processor["image_mean"] == [0.5, 0.4, 0.3]


def test_card_snippet_registered_type_and_project_loader_agree(export):
    folder, image, llm_features = export
    card = run_card_snippet(folder, image, llm_features)
    assert card["project_modules"] == []  # the snippet ran on the folder's own code
    assert card["model_class"].startswith("transformers_modules.")
    assert card["model_class"].endswith("modeling_llm2clip.LLM2CLIPModel")

    project = run_project_loaders(folder, image, llm_features)
    assert project["model_class"] == "models.llm2clip.LLM2CLIPModel"  # registered: no remote code
    assert card["image"].shape == (1, 8) and card["text"].shape == (3, 8)
    for side in ("image", "text"):
        assert np.array_equal(project[f"registered_{side}"], project[f"own_{side}"])
    # The card's processor makes the pixels the project's eval transform makes (a non-square image:
    # resize and crop included), so the features agree to float rounding.
    np.testing.assert_allclose(card["image"], project["own_image"], atol=1e-6)
    np.testing.assert_allclose(card["text"], project["own_text"], atol=1e-6)
