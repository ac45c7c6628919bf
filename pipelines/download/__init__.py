"""The download stage (STAGE; see stage.py for what it reads and writes)."""

from pipelines.download.stage import STAGE

__all__ = ["STAGE"]
