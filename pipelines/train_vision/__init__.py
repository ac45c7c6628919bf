"""The train_vision stage (STAGE; see stage.py for what it reads and writes)."""

from pipelines.train_vision.stage import STAGE

__all__ = ["STAGE"]
