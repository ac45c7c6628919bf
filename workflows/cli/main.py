"""`llm2clip`: one command line for the workflow and every standalone stage.

    llm2clip run --config configs/demo.yaml            # = python workflows/full.py --config ...
    llm2clip recaption --shards ... --output ...        # = python workflows/cli/recaption.py ...
    llm2clip <command> --help

Each subcommand is the script of the same name with the same flags; `python workflows/full.py` and
`ray job submit ... -- python workflows/full.py` keep working, since Ray users submit a script.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with main(argv, prog), one line of what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("workflows.full", "run a recipe's chain of stages (workflows/full.py)"),
    "recaption": ("workflows.cli.recaption", "dense-caption a webdataset shard folder with a VLM in vLLM"),
    "finetune-text": ("workflows.cli.finetune_text", "caption-contrastive fine-tuning of an LLM on shards"),
    "embed": ("workflows.cli.embed", "embed every caption of a shard folder with a text encoder"),
    "train-vision": ("workflows.cli.train_vision", "train a vision tower on shards and their embeddings"),
    "evaluate": ("workflows.cli.evaluate", "score an exported model on retrieval and zero-shot sets"),
    "convert-official": ("workflows.cli.convert_official", "convert a released LLM2CLIP checkpoint"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return (
        "usage: llm2clip <command> [options]\n\n"
        "The LLM2CLIP pipeline: recaption, fine-tune an LLM, embed, train a vision tower, evaluate.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`llm2clip <command> --help` shows a command's options.\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"llm2clip: unknown command {command!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest, prog=f"llm2clip {command}")


if __name__ == "__main__":
    sys.exit(main())
