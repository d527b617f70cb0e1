"""Write one benchmark's section of RESULTS.md, leaving the other benchmarks' sections alone."""

from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(title: str, section: str, path: Path = RESULTS_PATH) -> None:
    """Replace the section that starts with the heading line ``title`` by ``section``.

    ``section`` includes its heading. A missing file or section is created, appended last.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    start = text.find(title + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(title))
        rest = text[end + 1 :] if end != -1 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.write_text(text, encoding="utf-8")
