"""Synthetic scenes: the generators (basic, rich, second_language), their table (table.py) and the
scenes stage. STAGE loads on first use, so the generators import without Ray."""


def __getattr__(name: str):
    if name == "STAGE":
        from demo.scenes.stage import STAGE

        return STAGE
    raise AttributeError(name)
