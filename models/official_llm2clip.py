"""The official LLM2CLIP vision checkpoints (microsoft/LLM2CLIP-Openai-L-14-336 and its siblings) in this
project's layout, so that evaluate, LLaVA-style use and further training take them as they take an export.

The official folder is a CLIPModel-style checkpoint: `config.json` with `model_type: clip`, a
`vision_config` and `projection_dim`, and weights named
  vision_model.*                      the CLIP vision transformer (ours: the same names under
                                      transformers 5, where CLIPVisionModel keeps its weights at its
                                      top level; vision_model.vision_model.* under transformers 4)
  visual_projection.weight            the same here
  text_adapter.adaptor.{i}.ln.*       block i's LayerNorm    (ours: text_adapter.blocks.{i}.norm.*)
  text_adapter.adaptor.{i}.fn.{0,3}.* block i's two Linears (ours: text_adapter.blocks.{i}.mlp.{0,3}.*)
  text_adapter.adaptor.{depth}.*      the final LayerNorm   (ours: text_adapter.norm.*)
  text_adapter.adaptor.{depth + 1}.*  the output Linear     (ours: text_adapter.output.*)
  logit_scale                         when present
The adapter has no input projection: the blocks run at the LLM's width (4096 for Llama-3-8B), expansion
and output bias are read off the weights. A CLIP text tower, if the checkpoint carries one, is left out
(LLM2CLIP replaces it), as are non-persistent buffers; any other name is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import torch

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel

ADAPTOR = "text_adapter.adaptor."
DROPPED_PREFIXES = ("text_model.", "text_projection.")  # a CLIP text tower: not part of LLM2CLIP
DROPPED_BUFFERS = ("vision_model.embeddings.position_ids",)  # saved by older transformers, rebuilt on load


@dataclasses.dataclass(frozen=True)
class MappedKey:
    official: str
    ours: str | None  # None: left out, for `why`
    shape: tuple[int, ...]
    why: str = ""


@functools.cache
def tower_prefix() -> str:
    """Where this project's model keeps the CLIP vision transformer's weights: "vision_model." and
    whatever CLIPVisionModel puts before its own in the installed transformers (nothing in 5,
    "vision_model." in 4). Found on the meta device, so nothing is allocated."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        image_size=8,
        patch_size=8,
    )
    with torch.device("meta"):
        first = next(iter(CLIPVisionModel(config).state_dict()))
    return "vision_model." + ("vision_model." if first.startswith("vision_model.") else "")


def adapter_shape(shapes: dict[str, tuple[int, ...]]) -> dict[str, int | bool]:
    """llm_dim, depth, expansion and output bias of the official adapter, from its weights' shapes."""
    blocks = sorted(
        {int(m.group(1)) for k in shapes if (m := re.match(rf"{re.escape(ADAPTOR)}(\d+)\.fn\.", k))}
    )
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError(f"official checkpoint: no residual blocks {ADAPTOR}0..N.fn.* (found {blocks})")
    depth = len(blocks)
    hidden, llm_dim = shapes[f"{ADAPTOR}0.fn.0.weight"]
    if hidden % llm_dim:
        raise ValueError(f"official checkpoint: block width {hidden} is not a multiple of {llm_dim}")
    output = f"{ADAPTOR}{depth + 1}"
    if f"{output}.weight" not in shapes or f"{ADAPTOR}{depth}.weight" not in shapes:
        raise ValueError(f"official checkpoint: no final LayerNorm {ADAPTOR}{depth} and Linear {output}")
    return {
        "llm_dim": llm_dim,
        "depth": depth,
        "expansion": hidden // llm_dim,
        "output_bias": f"{output}.bias" in shapes,
        "projection_dim": shapes[f"{output}.weight"][0],
    }


def map_keys(shapes: dict[str, tuple[int, ...]]) -> list[MappedKey]:
    """Every official weight name with its name here (or why it is left out); raises on unknown names."""
    depth = int(adapter_shape(shapes)["depth"])
    mapped, unknown = [], []
    for key in sorted(shapes):
        ours, why = None, ""
        block = re.match(rf"{re.escape(ADAPTOR)}(\d+)\.(.+)$", key)
        if key in DROPPED_BUFFERS:
            why = "buffer, rebuilt on load"
        elif key.startswith(DROPPED_PREFIXES):
            why = "CLIP text tower, replaced by the LLM"
        elif key.startswith("vision_model."):
            ours = tower_prefix() + key.removeprefix("vision_model.")
        elif key in ("visual_projection.weight", "logit_scale"):
            ours = key
        elif block and int(block.group(1)) < depth:
            rest = block.group(2).replace("ln.", "norm.", 1).replace("fn.", "mlp.", 1)
            ours = f"text_adapter.blocks.{block.group(1)}.{rest}"
        elif block and int(block.group(1)) == depth:
            ours = f"text_adapter.norm.{block.group(2)}"
        elif block and int(block.group(1)) == depth + 1:
            ours = f"text_adapter.output.{block.group(2)}"
        else:
            unknown.append(key)
        mapped.append(MappedKey(key, ours, tuple(shapes[key]), why))
    if unknown:
        raise ValueError(f"official checkpoint: weights of no known part: {unknown[:10]}")
    return mapped


def converted_config(official: dict, shapes: dict[str, tuple[int, ...]]) -> LLM2CLIPConfig:
    """This project's config for an official checkpoint: its vision tower, and the adapter's shape."""
    vision = dict(official.get("vision_config") or {})
    if not vision:
        raise ValueError("official checkpoint: config.json has no vision_config")
    vision["model_type"] = "clip_vision_model"
    adapter = adapter_shape(shapes)
    projection_dim = int(official.get("projection_dim", adapter["projection_dim"]))
    if projection_dim != adapter["projection_dim"]:
        raise ValueError(
            f"official checkpoint: projection_dim {projection_dim} in config.json, "
            f"{adapter['projection_dim']} in the adapter's output weights"
        )
    return LLM2CLIPConfig(
        vision_config=vision,
        llm_dim=int(adapter["llm_dim"]),
        adapter_width=int(adapter["llm_dim"]),
        adapter_depth=int(adapter["depth"]),
        adapter_expansion=int(adapter["expansion"]),
        adapter_input_projection=False,
        adapter_output_bias=bool(adapter["output_bias"]),
        projection_dim=projection_dim,
        logit_scale_init=float(official.get("logit_scale_init_value", 2.6592)),
    )


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files (one, or the shards its index names)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no safetensors weights (pickled checkpoints are not read)")
    return files


def read_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Weight names and shapes from the safetensors headers, without reading a weight."""
    from safetensors import safe_open

    shapes = {}
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def convert_official(folder: str | Path) -> tuple[LLM2CLIPModel, list[MappedKey]]:
    """(this project's model holding the official weights, the mapping used), in float32."""
    from safetensors import safe_open

    folder = Path(folder)
    official = json.loads((folder / "config.json").read_text())
    shapes = read_shapes(folder)
    mapping = map_keys(shapes)
    model = LLM2CLIPModel(converted_config(official, shapes))
    state = {}
    targets = {m.official: m.ours for m in mapping if m.ours}
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                if key in targets:
                    state[targets[key]] = handle.get_tensor(key).float()
    expected = set(model.state_dict())
    # logit_scale is the one weight an official checkpoint may lack: it is not used by the features.
    missing = sorted(expected - set(state) - {"logit_scale"})
    if missing:
        raise ValueError(f"official checkpoint: no weight for {missing[:10]}")
    loaded = model.load_state_dict(state, strict=False)
    if loaded.unexpected_keys:  # a mapping that names no weight here: a bug, not a checkpoint problem
        raise ValueError(f"official checkpoint: mapped onto no weight here: {loaded.unexpected_keys[:10]}")
    return model.eval(), mapping
