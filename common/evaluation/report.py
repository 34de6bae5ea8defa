"""The evaluation report: one JSON file written atomically, and the same numbers as a printed table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.io.writers import write_json


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON through a temp file and a rename, so a failed run leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(report, path)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table: metric, value, n, extractor, method."""
    cols = ("metric", "value", "n", "extractor", "method")
    rows = [[_fmt(r.get(c)) for c in cols] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows)])
