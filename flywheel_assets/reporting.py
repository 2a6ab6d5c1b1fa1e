"""Small pure helpers for what people read: figures rounded for display, markdown
tables and charts embedded as PNG data URIs (no Dagster import)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from io import BytesIO

SIGNIFICANT_DIGITS = 4


def rounded(value):
    """``value`` with every float rounded for a reader: 4 significant digits, and whole
    numbers from 1,000 up (0.9303046748863875 → 0.9303, 197951.4 → 197951.0). Nested
    dicts, lists and tuples are rounded through; everything else is returned as is."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return value
        if abs(value) >= 10 ** (SIGNIFICANT_DIGITS - 1):
            return float(round(value))
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def inert(value: object) -> str:
    """A value that may come from the logs, safe in markdown and in HTML: ``<``, ``>``
    and ``&`` as entities (no tag, no script), ``|`` and brackets escaped (no cell break,
    no link), line breaks as spaces. Figures and our own names come out unchanged."""
    text = html.escape(str(value), quote=False)
    for char in "|[]":
        text = text.replace(char, "\\" + char)
    return " ".join(text.splitlines())


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table of `inert` cells (format numbers before)."""
    lines = ["| " + " | ".join(inert(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(inert(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG, the figure closed after."""
    import matplotlib.pyplot as plt

    buf = BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI, to embed in markdown metadata."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def new_figure(width: float, height: float, dpi: int = 80, ncols: int = 1):
    """A headless matplotlib figure and its axes (matplotlib is imported here, not when
    the code location loads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), dpi=dpi)
