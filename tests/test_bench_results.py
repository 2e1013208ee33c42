"""Benchmark results as JSON with their meta, rendered into the docs: no table without when, where and how."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


_spec = importlib.util.spec_from_file_location("_docs_hooks", REPO / "tools" / "docs_hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)
res = hooks.results_module()  # benchmarks/_results.py, the module the hook renders with


def test_written_results_carry_their_meta_and_render_as_a_table(tmp_path):
    path = res.write("toy", [{"case": "a|b", "seconds": 1.23456, "items": 20000}, {"case": "c", "ratio": None}],
                     {"goal": "met"}, out_dir=tmp_path)
    doc = json.loads(path.read_text())
    assert set(res.META_KEYS) <= set(doc["meta"])
    assert doc["meta"]["command"].startswith("python ") and doc["meta"]["cpu_count"] >= 1
    assert len(doc["meta"]["load_avg"]) == 3 and re.match(r"^[0-9a-f]{7,}(\+dirty)?$|^unknown$", doc["meta"]["commit"])
    md = res.render(res.load(path))
    lines = md.splitlines()
    assert lines[0] == "| case | seconds | items | ratio |"  # columns in first-seen order
    assert "| a\\|b | 1.235 | 20,000 | – |" in lines  # a pipe in a cell is escaped, a missing cell is a dash
    assert "- **goal**: met" in md
    assert f"commit `{doc['meta']['commit']}`" in md and "load average" in md and doc["meta"]["command"] in md


@pytest.mark.parametrize("broken, message", [
    ({"rows": [{"a": 1}]}, "no 'meta'"),
    ({"meta": {"date": "2026-01-01", "commit": "abc1234", "machine": "m", "cpu_count": 2, "command": "python x.py"},
      "rows": [{"a": 1}]}, "meta lacks load_avg"),
    ({"meta": {"date": "", "commit": "abc1234", "machine": "m", "cpu_count": 2, "load_avg": [1, 1, 1],
               "command": "python x.py"}, "rows": [{"a": 1}]}, "meta lacks date"),
    ({"meta": {"date": "d", "commit": "c", "machine": "m", "cpu_count": 2, "load_avg": [1, 1, 1], "command": "x"},
      "rows": []}, "non-empty list"),
])
def test_the_renderer_refuses_a_file_without_its_meta_or_rows(tmp_path, broken, message):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(res.ResultsError, match=message):
        res.load(path)
    with pytest.raises(res.ResultsError, match=message):
        res.render(broken)
    (tmp_path / "page.md").write_text("text\n<!-- results: broken -->\n")
    with pytest.raises(res.ResultsError, match=f"page.md: .*broken.json: .*{message}"):
        hooks.render_markers((tmp_path / "page.md").read_text(), "page.md", results_dir=tmp_path)


def test_markers_become_tables_and_a_missing_file_fails(tmp_path):
    res.write("toy", [{"x": 1}], out_dir=tmp_path)
    page = "# Title\n\nBefore.\n\n<!-- results: toy -->\n\nAfter `<!-- results: toy -->` in code stays.\n"
    out = hooks.render_markers(page, "p.md", results_dir=tmp_path)
    assert "| x |" in out and "Measured " in out and out.startswith("# Title\n\nBefore.")
    assert "After `<!-- results: toy -->` in code stays." in out
    with pytest.raises(res.ResultsError, match="no such results file"):
        hooks.render_markers("<!-- results: absent -->\n", "p.md", results_dir=tmp_path)


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_BENCH_RESULTS", "off")
    assert res.write("toy", [{"x": 1}]) is None
    monkeypatch.setenv("AIGCQ_BENCH_RESULTS", str(tmp_path))
    assert res.write("toy", [{"x": 1}]) == tmp_path / "toy.json"


def test_every_committed_result_and_every_docs_marker_is_valid():
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        res.load(path)  # raises, naming the file, when one lacks its meta
    for page in sorted((REPO / "docs").rglob("*.md")):
        for name in hooks.MARKER.findall(page.read_text()):
            assert (REPO / "benchmarks" / "results" / f"{name}.json").is_file(), f"{page.name}: no results file {name}"


@pytest.mark.parametrize("renderer, message", [
    ("../x:render", "is not 'script:render...'"),
    ("bench_fit_time:main", "is not 'script:render...'"),  # a benchmark's main: the docs build ran it (exit 2)
    ("_results:render", "is not 'script:render...'"),  # this module itself: it recursed without end
    ("panel:render_nothing", "has no render_nothing"),
    ("panel:render_tables", r"cannot render it \("),  # the panel's renderer on rows that are not a panel's
])
def test_a_results_file_names_only_a_renderer_and_a_bad_one_is_one_line(tmp_path, renderer, message):
    doc = {"meta": {"date": "d", "commit": "c", "machine": "m", "cpu_count": 2, "load_avg": [1, 1, 1],
                    "command": "x", "renderer": renderer}, "rows": [{"a": 1}]}
    (tmp_path / "odd.json").write_text(json.dumps(doc))
    (tmp_path / "page.md").write_text("<!-- results: odd -->\n")
    with pytest.raises(res.ResultsError, match=f"page.md: .*odd.json: meta.renderer .*{message}"):
        hooks.render_markers((tmp_path / "page.md").read_text(), "page.md", results_dir=tmp_path)


def test_the_published_results_render_with_the_renderers_they_name():
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("meta", {}).get("renderer"):
            assert res.render(doc, path.name).strip()
