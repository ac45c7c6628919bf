"""docs/configuration.md, generated from the stages' config dataclasses: every setting of every recipe
section with its type, default, unit, whether it is part of the stage's cache key, and what it means (the
comment the dataclass gives it). Regenerate after changing a config:

    python -m workflows.config_reference            # writes docs/configuration.md
    python -m workflows.config_reference --check    # exit 1 if the file is stale (the test does this)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import sys
import textwrap
import tokenize
from pathlib import Path

from ops.hashing import to_plain

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
# A field's unit, read off its name's ending where the name says it (the comment says the rest).
UNITS = {
    "_px": "pixels",
    "_s": "seconds",
    "_gib": "GiB",
    "_steps": "steps",
    "_tokens": "tokens",
    "_share": "share, 0-1",
    "_ratio": "share, 0-1",
    "_per_worker": "per worker",
    "_per_shard": "samples per shard",
    "_sentences": "sentences",
}
KEY_RULES = {True: "yes", False: "no", "when_set": "when set"}
# The meaning of settings that many configs share, where the dataclass gives none.
COMMON_MEANINGS = {
    "seed": "random seed of what this stage draws or initialises",
    "hidden_size": "width of the model's hidden states",
    "num_layers": "transformer layers",
    "num_heads": "attention heads",
    "learning_rate": "peak learning rate (AdamW), reached after the warmup",
    "weight_decay": "AdamW's decoupled weight decay",
    "warmup_steps": "steps of linear warmup before the cosine decay",
    "max_grad_norm": "gradient clipping: the global norm is cut to this",
    "max_steps": "optimizer steps",
    "trust_remote_code": "run the model repository's own Python code (off unless a recipe asks)",
    "patch_size_px": "side of a ViT patch",
    "use_gpu": "one GPU per worker or actor",
    "gradient_checkpointing": "recompute activations in backward: less memory, about a third more compute",
    "eval_split_value": "the `split` value of held-out samples",
    "dense_caption_column": "the field or column that holds the dense caption",
    "samples_per_shard": "samples per webdataset shard",
    "thread_count": "download threads per process",
    "retries": "download retries per url",
    "temperature": "sampling temperature",
    "top_p": "nucleus sampling: the smallest token set with this much probability",
    "repetition_penalty": "vLLM's penalty on repeated tokens (1.0: none)",
    "rank": "LoRA rank",
    "alpha": "LoRA alpha (the update is scaled by alpha / rank)",
    "dropout": "dropout on the LoRA path",
    "target_modules": "the modules LoRA adapts",
    "max_failures": "Ray Train restarts of the worker group from the last checkpoint",
    "adapter_depth": "residual MLP blocks of the adapter",
}


def _comments(cls: type) -> dict[str, str]:
    """field name -> its comment: the one on its own line(s) if any, else the comment lines just above."""
    source = textwrap.dedent(inspect.getsource(cls))
    trailing: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        own = [trailing[n] for n in range(node.lineno, node.end_lineno + 1) if n in trailing]
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, lines[n - 1].strip().lstrip("#").strip())
            n -= 1
        found[node.target.id] = " ".join(own or above)
    return found


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _unit(name: str) -> str:
    return next((unit for suffix, unit in UNITS.items() if name.endswith(suffix)), "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(cls: type, prefix: str = "") -> list[tuple[str, ...]]:
    """(setting, type, default, unit, in key, meaning) per field, nested configs flattened with dots."""
    comments, out = _comments(cls), []
    for field in dataclasses.fields(cls):
        name, default = prefix + field.name, _default(field)
        nested = field.type if isinstance(field.type, type) else None
        if default is not dataclasses.MISSING and dataclasses.is_dataclass(default):
            nested = type(default)
        if nested is not None and dataclasses.is_dataclass(nested):
            out += rows(nested, name + ".")
            continue
        shown = "required" if default is dataclasses.MISSING else json.dumps(to_plain(default))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        key = KEY_RULES[field.metadata.get("in_key", True)]
        meaning = comments.get(field.name) or COMMON_MEANINGS.get(field.name, "")
        out.append((name, str(field.type), shown, _unit(field.name), key, meaning))
    return out


def reference_markdown() -> str:
    from workflows.registry import CHAIN

    parts = [
        "# Configuration reference",
        "",
        "Every setting of every recipe section, generated from the config dataclasses by",
        "`python -m workflows.config_reference` (a test fails when this file is stale). *In key*: whether",
        "the setting is part of the stage's cache key (*no*: it says where or how in parallel the stage",
        "runs, and changing it reuses cached work; *when set*: only once set to other than its default).",
        "Units are read off the name where it says one; the meaning column gives the rest.",
        "",
    ]
    for spec in CHAIN:
        parts += [f"## `{spec.name}`", "", spec.description + ".", ""]
        parts += ["| setting | type | default | unit | in key | meaning |", "|---|---|---|---|---|---|"]
        for row in rows(spec.config_cls):
            name, kind, default, unit, key, meaning = (_cell(c) for c in row)
            parts.append(f"| `{name}` | `{kind}` | `{default}` | {unit} | {key} | {meaning} |")
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        stale = not OUTPUT.is_file() or OUTPUT.read_text() != text
        print(f"{OUTPUT}: {'stale, regenerate it' if stale else 'up to date'}")
        return 1 if stale else 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
