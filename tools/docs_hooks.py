"""mkdocs hook: a line ``<!-- results: NAME -->`` in a page becomes the table of benchmarks/results/NAME.json.

The tables are made from the benchmarks' own output at every build, never retyped, so they cannot
drift from what was measured; a missing file, or one without its meta (date, commit, machine, load,
command), fails the build (``mkdocs build --strict`` in CI) with the page and the file named.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!--\s*results:\s*([\w.-]+)\s*-->[ \t]*$", re.MULTILINE)


def results_module():
    """benchmarks/_results.py, loaded once by path (benchmarks/ is a folder of scripts, not a package)."""
    if "_bench_results" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_bench_results", REPO / "benchmarks" / "_results.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["_bench_results"] = mod
    return sys.modules["_bench_results"]


def render_markers(markdown: str, where: str = "page", results_dir: str | Path | None = None) -> str:
    """Replace every results marker of ``markdown`` by its rendered table (raises on a bad or missing file)."""
    res = results_module()

    def table(m: re.Match) -> str:
        try:
            return res.render(res.load(m.group(1), results_dir), f"{m.group(1)}.json")  # errors name the file
        except res.ResultsError as e:
            raise res.ResultsError(f"{where}: {e}") from None

    return MARKER.sub(table, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - mkdocs hook signature
    from mkdocs.exceptions import PluginError

    try:
        return render_markers(markdown, page.file.src_path)
    except ValueError as e:  # ResultsError: one line naming the page and the file, no traceback
        raise PluginError(str(e)) from None
