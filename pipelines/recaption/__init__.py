"""The recaption stage (STAGE; see stage.py for what it reads and writes)."""

from pipelines.recaption.stage import STAGE

__all__ = ["STAGE"]
