"""The scenes stage (STAGE): generated images with short, dense and second-language captions, and the
table the other stages read (table.py). The generators it draws with are demo/basic_scenes.py,
demo/rich_scenes.py and demo/second_language.py."""

from demo.scenes.stage import STAGE

__all__ = ["STAGE"]
