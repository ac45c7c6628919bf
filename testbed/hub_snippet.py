"""The LLM2CLIP model card's usage, run on an export folder in a fresh Python process that does not import
this project (as a Hub user would run it), and the same through the project's registered model type and
its own loader. Each returns the image and text features, to be compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from testbed.demo_run import REPO_ROOT

# The card's snippet, verbatim in its three lines (processor, model, get_image_features); around them
# only argument handling and writing the results.
CARD_SNIPPET = """
import json, sys
import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, CLIPImageProcessor

path, image_path, llm_features, out = sys.argv[1:5]
image = Image.open(image_path)
processor = CLIPImageProcessor.from_pretrained(path)
model = AutoModel.from_pretrained(path, torch_dtype=torch.float32, trust_remote_code=True).eval()
with torch.no_grad():
    outputs = model.get_image_features(processor(images=image, return_tensors="pt").pixel_values)
    text = model.get_text_features(torch.from_numpy(np.load(llm_features)))
np.save(out + "/image.npy", outputs.numpy())
np.save(out + "/text.npy", text.numpy())
project = sorted(m for m in sys.modules if m.split(".")[0] in ("models", "ops", "pipelines", "workflows"))
json.dump({"model_class": type(model).__module__ + "." + type(model).__name__, "project_modules": project},
          open(out + "/info.json", "w"))
"""

# With the project installed: importing models.llm2clip registers the type, AutoModel needs no remote
# code; then the project's own loader.
PROJECT_LOADERS = """
import json, sys
import numpy as np
import torch
from PIL import Image
from transformers import AutoModel

import models.llm2clip
from models.llm2clip_export import load_export
from ops.image_transforms import eval_transform
from ops.image_decode import decode_rgb

path, image_path, llm_features, out = sys.argv[1:5]
registered = AutoModel.from_pretrained(path).eval()
own, transform = load_export(path)
pixels = eval_transform(decode_rgb(open(image_path, "rb").read()), transform)[None]
features = torch.from_numpy(np.load(llm_features))
with torch.no_grad():
    for name, model in (("registered", registered), ("own", own)):
        np.save(f"{out}/{name}_image.npy", model.get_image_features(pixels).numpy())
        np.save(f"{out}/{name}_text.npy", model.get_text_features(features).numpy())
json.dump({"model_class": type(registered).__module__ + "." + type(registered).__name__},
          open(out + "/info.json", "w"))
"""


def _run(code: str, folder: Path, image: Path, llm_features: np.ndarray, cwd: Path, env: dict) -> Path:
    out = Path(tempfile.mkdtemp(prefix="hub-snippet-"))
    np.save(out / "llm_features.npy", llm_features.astype(np.float32))
    command = [sys.executable, "-c", code, str(folder), str(image), str(out / "llm_features.npy"), str(out)]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"the snippet failed on {folder}:\n{done.stderr[-4000:]}")
    return out


def run_card_snippet(folder: Path, image: Path, llm_features: np.ndarray) -> dict:
    """The card's snippet in a fresh process run outside the repository with no PYTHONPATH, and its
    remote-code modules cached in a fresh folder: {"image", "text", "model_class", "project_modules"}."""
    cwd = Path(tempfile.mkdtemp(prefix="hub-user-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_MODULES_CACHE": str(cwd / "modules"), "HF_HUB_OFFLINE": "1"})
    out = _run(CARD_SNIPPET, folder, image, llm_features, cwd, env)
    info = json.loads((out / "info.json").read_text())
    return {"image": np.load(out / "image.npy"), "text": np.load(out / "text.npy"), **info}


def run_project_loaders(folder: Path, image: Path, llm_features: np.ndarray) -> dict:
    """AutoModel through the registered type (no remote code) and load_export, in a fresh process:
    {"registered_image", "registered_text", "own_image", "own_text", "model_class"}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = _run(PROJECT_LOADERS, folder, image, llm_features, REPO_ROOT, env)
    found = {p.stem: np.load(p) for p in out.glob("*_*.npy") if p.stem != "llm_features"}
    return {**found, **json.loads((out / "info.json").read_text())}
