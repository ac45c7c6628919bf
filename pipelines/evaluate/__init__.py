"""The evaluate stage (STAGE; see stage.py for what it reads and writes)."""

from pipelines.evaluate.stage import STAGE

__all__ = ["STAGE"]
