"""Turn an official LLM2CLIP vision checkpoint into this project's export folder.

    python workflows/cli/convert_official.py --checkpoint microsoft/LLM2CLIP-Openai-L-14-336 --dry-run
    python workflows/cli/convert_official.py --checkpoint <folder | HF id | s3://...> --output llm2clip-l336

--dry-run reads only the config and the safetensors headers and prints every weight's name here (or why
it is left out) and the configuration the export gets; nothing is written. The export is a complete
Hugging Face folder (models/llm2clip_export.py): evaluate scores it (`evaluate.model: <output>`),
and `AutoModel.from_pretrained(<output>, trust_remote_code=True)` loads it.
The official repositories ship no preprocessor_config.json (their card uses OpenAI's CLIP processor):
the export gets CLIP's normalisation at the tower's resolution, or --processor's file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflows.plan import format_table


def build_parser(prog: str = "workflows/cli/convert_official.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An official LLM2CLIP vision checkpoint (e.g. microsoft/LLM2CLIP-Openai-L-14-336) "
        "as this project's export folder.",
    )
    parser.add_argument("--checkpoint", required=True, help="folder, object-store folder or HF id")
    parser.add_argument("--output", help="the export folder to write (required unless --dry-run)")
    parser.add_argument(
        "--processor",
        help="a folder whose preprocessor_config.json gives mean and std (default: OpenAI CLIP's)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the key mapping and config only")
    return parser


def _local_checkpoint(reference: str, stack) -> Path:
    """A local folder holding the checkpoint's config and safetensors."""
    from ops.model_files import is_remote, local_model

    if Path(reference).is_dir() or is_remote(reference):
        return Path(stack.enter_context(local_model(reference)))
    from huggingface_hub import snapshot_download  # an HF id: config and safetensors only

    return Path(snapshot_download(reference, allow_patterns=["*.json", "*.safetensors"]))


def main(argv: list[str] | None = None, prog: str = "workflows/cli/convert_official.py") -> int:
    import contextlib

    args = build_parser(prog).parse_args(argv)  # before torch and transformers load: --help is instant
    from models.official_llm2clip import convert_official, converted_config, map_keys, read_shapes

    if not args.dry_run and not args.output:
        print("convert_official: --output is required (or --dry-run)", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        folder = _local_checkpoint(args.checkpoint, stack)
        if not (folder / "config.json").is_file():
            print(f"convert_official: {folder} has no config.json", file=sys.stderr)
            return 2
        if args.dry_run:
            shapes = read_shapes(folder)
            mapping = map_keys(shapes)
            rows = [("official", "here", "shape")]
            rows += [
                (m.official, m.ours or f"(left out: {m.why})", "x".join(map(str, m.shape))) for m in mapping
            ]
            print(format_table(rows))
            config = converted_config(json.loads((folder / "config.json").read_text()), shapes)
            adapter = {
                k: v for k, v in config.to_dict().items() if k.startswith(("adapter_", "llm_dim", "proj"))
            }
            print(f"\n{len(mapping)} weights; config: {json.dumps(adapter, sort_keys=True)}")
            return 0
        model, mapping = convert_official(folder)
        transform = _transform(model, args.processor)
        _write(model, transform, args.output)
    kept = sum(1 for m in mapping if m.ours)
    print(f"converted {kept} weights ({len(mapping) - kept} left out) -> {args.output}")
    return 0


def _transform(model, processor: str | None):
    from models.vision_tower import image_normalisation
    from ops.image_transforms import CLIP_MEAN, CLIP_STD, ImageTransformConfig

    mean, std = image_normalisation(processor) if processor else (CLIP_MEAN, CLIP_STD)
    return ImageTransformConfig(size_px=int(model.vision_model.config.image_size), mean=mean, std=std)


def _write(model, transform, output: str) -> None:
    """The export, written in place, or staged and uploaded when output is an object-store URI."""
    from models.llm2clip_export import save_export
    from ops.artifact_dir import ArtifactDir

    with ArtifactDir(output).local_dir("") as folder:
        save_export(model, transform, folder)


if __name__ == "__main__":
    sys.exit(main())
