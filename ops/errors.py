"""Errors meaning "the input is wrong" rather than a bug: the workflow prints them without a traceback."""

from __future__ import annotations


class BadInputError(ValueError):
    """An input file, table or column cannot be used; the message names it and says what was expected."""
