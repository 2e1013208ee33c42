"""Where the project's run folder is, for code that does not start at the project root (notebooks).

Jupyter starts a notebook's kernel in the notebook's own folder (``jupyter execute``, JupyterLab,
VS Code), so ``runs/demo/...`` relative to the working directory points into ``experiments/``. The
run folder is found instead, in this order:

1. ``$AIGCQ_RUNS``: the run folder itself;
2. ``$AIGCQ_PROJECT``: the project folder; its ``runs/``;
3. the nearest ``runs/`` folder in the working directory or above it (for a notebook in
   ``experiments/`` of a clone: the clone's ``runs/``, where ``make demo`` writes ``runs/demo``).

Nothing found, or the file a notebook needs absent, is a FileNotFoundError that says what to run or set.
"""
from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "AIGCQ_RUNS"
PROJECT_ENV = "AIGCQ_PROJECT"


def find_runs(start: str | os.PathLike | None = None) -> Path:
    """The run folder: ``$AIGCQ_RUNS``, ``$AIGCQ_PROJECT/runs``, or the nearest ``runs/`` at or above ``start`` (cwd)."""
    if os.environ.get(RUNS_ENV):
        runs = Path(os.environ[RUNS_ENV]).expanduser()
        if not runs.is_dir():
            raise FileNotFoundError(f"{RUNS_ENV}={runs} is not a folder (it should be the project's runs/ folder)")
        return runs.resolve()
    if os.environ.get(PROJECT_ENV):
        project = Path(os.environ[PROJECT_ENV]).expanduser()
        if not (project / "runs").is_dir():
            raise FileNotFoundError(f"{PROJECT_ENV}={project} has no runs/ folder: run `make demo` there first "
                                    f"(it writes runs/demo), or set {RUNS_ENV} to the run folder")
        return (project / "runs").resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "runs").is_dir():
            return folder / "runs"
    raise FileNotFoundError(
        f"no runs/ folder in {here} or above it: run `make demo` in the project folder (it writes runs/demo) and "
        f"start Jupyter inside the project, or set {RUNS_ENV}=<the project's runs folder> "
        f"(or {PROJECT_ENV}=<the project folder>)")


def run_path(relative: str, env: str | None = None, *, must_exist: bool = True,
             start: str | os.PathLike | None = None) -> Path:
    """``$env`` when set, else ``find_runs(start) / relative``; with ``must_exist``, a missing path says what makes it."""
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    runs = find_runs(start)
    path = runs / relative
    if must_exist and not path.exists():
        made_by = "`make demo`" if Path(relative).parts[0] == "demo" else "the job that writes it"
        override = f", or set {env} to another one" if env else ""
        raise FileNotFoundError(f"{path} does not exist: run {made_by} in {runs.parent} first{override}")
    return path
