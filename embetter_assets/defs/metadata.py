"""Helpers that turn results into Dagster materialization metadata."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg


def markdown_table(rows: list[tuple], columns: list[str]) -> str:
    """Render rows as a Markdown table, escaping the characters that would break it."""

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def inline_png(path: Path, title: str) -> dg.MetadataValue:
    """Return Markdown metadata that shows the PNG at ``path`` in the Dagster UI."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
