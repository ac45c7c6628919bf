"""The embed stage (STAGE; see stage.py for what it reads and writes)."""

from pipelines.embed.stage import STAGE

__all__ = ["STAGE"]
