"""Write the evaluation report as one self-contained HTML page, charts inlined."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_report_page(
    path: Path,
    *,
    title: str,
    recommendation: str,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    facts: Mapping[str, object],
    charts: Mapping[str, Path],
) -> Path:
    """Write an HTML page with the recommendation, a score table, facts and charts.

    Charts are embedded as base64 PNGs, so the page can be mailed or archived alone.
    """
    table_head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
    table_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(value))}</td>" for value in row) + "</tr>" for row in rows
    )
    fact_items = "".join(
        f"<li><b>{html.escape(str(name))}</b>: {html.escape(_format(value))}</li>" for name, value in facts.items()
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(chart).read_bytes()).decode("ascii")}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, chart in charts.items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 70em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }}
.recommendation {{ font-size: 1.15em; padding: 0.6em 1em; background: #eef6ee; border-left: 4px solid #3a3; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="recommendation">{html.escape(recommendation)}</p>
<h2>Held-out scores</h2>
<table><thead><tr>{table_head}</tr></thead><tbody>{table_rows}</tbody></table>
<h2>Facts</h2>
<ul>{fact_items}</ul>
<h2>Charts</h2>
{figures}
</body>
</html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
