"""Every reliability test says what its bad input got (`got(...)`), for tests/reliability/report.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def got(record_property):
    """got(text): record what the case's input got (an error's first line, or the counted rejection)."""

    def record(text: str) -> None:
        record_property("got", " ".join(str(text).split())[:300])

    return record
