"""Plots as PNG bytes, for artifact files and MLflow: the one place figures are rendered and closed."""

from __future__ import annotations

import io


def png_bytes(figure) -> bytes:
    """The figure as PNG bytes; closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
