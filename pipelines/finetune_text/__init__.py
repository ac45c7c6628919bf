"""The finetune_text stage (STAGE; see stage.py for what it reads and writes)."""

from pipelines.finetune_text.stage import STAGE

__all__ = ["STAGE"]
