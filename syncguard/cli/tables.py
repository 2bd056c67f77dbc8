"""Plain-text tables for the command line: aligned columns, one header row, no dependency."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["cell", "render", "render_rows"]

#: Longest cell shown, in characters; longer text ends in an ellipsis.
MAX_CELL_CHARS = 60
#: What an empty (NULL) cell shows.
EMPTY = "-"


def cell(value: Any) -> str:
    """One value as a single-line table cell."""
    if value is None:
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float | Decimal):
        return f"{value:.2f}"
    if isinstance(value, uuid.UUID):
        return str(value)
    text = " ".join(str(value).split())  # newlines and tabs would break the alignment
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` under ``headers`` in left-aligned columns separated by two spaces."""
    cells = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def render_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Mappings (query rows) as a table of ``columns``, or of every key of the first row."""
    if not rows:
        return "(none)"
    keys = list(columns) if columns is not None else list(rows[0].keys())
    return render(keys, [[row.get(key) for key in keys] for row in rows])
