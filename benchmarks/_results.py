"""Benchmark results as JSON files that the docs render into tables (so no number is retyped).

Every benchmark ends with ``write(name, rows, summary)``; that writes ``benchmarks/results/<name>.json``::

    {"meta": {"date", "commit", "machine", "cpu_count", "load_avg", "command", ...},
     "rows": [{"column": value, ...}, ...],
     "summary": {"key": value, ...}}

``meta`` is collected here, not by the benchmark: the UTC date, the git commit when the benchmark
started (``+dirty`` when tracked files other than the results differed from it then), the machine (OS, CPU model, memory), the CPUs
this process may use, the load average when this module was imported and when the file was written
(``load_avg``: 1, 5 and 15 minutes), the process's nice value and the command line that reproduces it.

The docs site (``mkdocs build``, hook ``tools/docs_hooks.py``) replaces a line
``<!-- results: NAME -->`` in a page by ``render(load(NAME))``; ``load`` refuses a file without its
meta, so a table can never appear without when, where and how it was measured.

``AIGCQ_BENCH_RESULTS`` sets another folder for the files (a trial run that must not replace the
published results), or ``off`` to write none.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
META_KEYS = ("date", "commit", "machine", "cpu_count", "load_avg", "command")

# Why at import: a benchmark imports this first thing, so this is the load before its own work; the commit
# is read then too, as the code it runs is the code of that moment (later edits to the tree do not count).
_START: dict = {"load": os.getloadavg(), "time": time.perf_counter()}


class ResultsError(ValueError):
    """A results file that cannot be shown: unreadable, or missing its meta or rows."""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _commit() -> str:
    head = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    return f"{head}+dirty" if dirty else head


def _machine() -> str:
    u = platform.uname()
    cpu = u.processor or u.machine
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{u.system} {u.release} {u.machine}, {cpu}{mem}, Python {platform.python_version()}"


def _command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).is_absolute():
        try:
            argv[0] = str(Path(argv[0]).relative_to(REPO))
        except ValueError:
            pass
    return shlex.join(["python", *argv])


_START["commit"] = _commit()


def collect_meta(command: str | None = None) -> dict:
    """When, on what and how: the meta of a results file (load averages rounded to 0.01)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _START["commit"],
        "machine": _machine(),
        "cpu_count": usable,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "load_avg_start": [round(x, 2) for x in _START["load"]],
        "nice": os.nice(0),
        "wall_s": round(time.perf_counter() - _START["time"], 1),
        "command": command or _command(),
    }


def _jsonable(v):
    """numpy scalars and arrays, tuples and non-finite floats as plain JSON."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write(name: str, rows: list[dict], summary: dict | None = None, *, command: str | None = None,
          out_dir: str | Path | None = None) -> Path | None:
    """Write ``<out_dir>/<name>.json`` (default benchmarks/results, or $AIGCQ_BENCH_RESULTS); returns its path."""
    env = os.environ.get("AIGCQ_BENCH_RESULTS", "")
    if out_dir is None and env.lower() == "off":
        return None
    folder = Path(out_dir or env or RESULTS_DIR)
    doc = {"meta": collect_meta(command), "rows": _jsonable(list(rows)), "summary": _jsonable(dict(summary or {}))}
    validate(doc, name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    print(f"results: {path}", file=sys.stderr)
    return path


def validate(doc, source: str = "results") -> dict:
    """Refuse a document that lacks its meta (every key of META_KEYS), its rows, or has a non-dict summary."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: not a JSON object with meta, rows and summary")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise ResultsError(f"{source}: no 'meta' (date, commit, machine, cpu_count, load_avg, command): "
                           "a table without when and where it was measured is not shown")
    missing = [k for k in META_KEYS if meta.get(k) in (None, "", [])]
    if missing:
        raise ResultsError(f"{source}: meta lacks {', '.join(missing)}")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ResultsError(f"{source}: 'rows' must be a non-empty list of objects")
    if not isinstance(doc.get("summary", {}), dict):
        raise ResultsError(f"{source}: 'summary' must be an object")
    return doc


def load(name_or_path: str | Path, results_dir: str | Path | None = None) -> dict:
    """Read and validate a results file, by path or by name in the results folder."""
    p = Path(name_or_path)
    if p.suffix != ".json":
        p = Path(results_dir or RESULTS_DIR) / f"{p}.json"
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{p}: no such results file (run the benchmark that writes it)") from None
    except (OSError, ValueError) as e:
        raise ResultsError(f"{p}: unreadable ({e})") from None
    return validate(doc, str(p))


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return str(v).replace("|", "\\|").replace("\n", " ")


def _custom_renderer(spec: str, source: str):
    """``"panel:render_tables"`` -> the function ``render_tables`` of benchmarks/panel.py (a results file whose rows
    do not fit one flat table names its benchmark's own renderer in ``meta.renderer``). Only a function named
    ``render*`` defined at the top of a script of this folder (read before the script is imported): a results
    file must not make the docs build run a benchmark's ``main`` (``bench_fit_time:main`` did), nor this module
    render itself (``_results:render`` recursed without end)."""
    import ast
    import importlib.util
    import re

    m = re.fullmatch(r"([a-z][a-z0-9_]*):(render[a-z0-9_]*)", spec or "")
    path = REPO / "benchmarks" / f"{m.group(1)}.py" if m else None
    if path is None or not path.is_file():
        raise ResultsError(f"{source}: meta.renderer {spec!r} is not 'script:render...' of a script in benchmarks/")
    defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
    if m.group(2) not in defined:
        raise ResultsError(f"{source}: meta.renderer {spec!r}: benchmarks/{m.group(1)}.py has no {m.group(2)}()")
    name = f"_bench_render_{m.group(1)}"
    if name not in sys.modules:
        spec_ = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(mod)
        sys.modules[name] = mod
    fn = getattr(sys.modules[name], m.group(2))

    def checked(doc: dict) -> str:
        try:
            return fn(doc)
        except Exception as err:  # a renderer given rows it does not know: one line naming the file, not a traceback
            raise ResultsError(f"{source}: meta.renderer {spec!r} cannot render it ({type(err).__name__}: {err})") from None
    return checked


def render(doc: dict, source: str = "results") -> str:
    """Markdown: the rows as a table (columns in first-seen order), the summary, and the meta line; or, when
    ``meta.renderer`` names one (``"panel:render"``), that benchmark's own tables and the meta line."""
    validate(doc, source)
    if doc["meta"].get("renderer"):
        return _custom_renderer(doc["meta"]["renderer"], source)(doc) + "\n\n" + meta_line(doc["meta"])
    cols: list[str] = []
    for r in doc["rows"]:
        cols += [k for k in r if k not in cols]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in doc["rows"]]
    summary = doc.get("summary") or {}
    if summary:
        lines += [""] + [f"- **{_cell(k)}**: {_cell(v)}" for k, v in summary.items()]
    return "\n".join([*lines, "", meta_line(doc["meta"])])


def meta_line(m: dict) -> str:
    """When, where, how loaded and how to rerun, as one small line under a table."""
    load_txt = " / ".join(f"{x:.2f}" for x in m["load_avg"]) if isinstance(m["load_avg"], list) else m["load_avg"]
    if isinstance(m.get("load_avg_start"), list):
        load_txt += f" (at start {m['load_avg_start'][0]:.2f})"
    extra = f", nice {m['nice']}" if m.get("nice") else ""
    extra += f", {m['wall_s']:.0f} s" if isinstance(m.get("wall_s"), (int, float)) else ""
    return (f"<small>Measured {m['date']} at commit `{m['commit']}` on {m['machine']}, "
            f"{m['cpu_count']} CPUs, load average {load_txt}{extra}. Rerun: `{m['command']}`</small>")
