"""Run folders written whole or not at all.

A run (model bundle, metrics, predictions, report, submission) is written into a hidden
temporary folder beside its destination and renamed into place only when complete. A
kill or an error at any point leaves the previous run as it was (or, between the two
renames of the swap, no run folder and the previous one under ``.<name>.old-<pid>``),
never a new model beside an old run's metrics or submission.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

#: files by which an existing folder is recognised as a run folder this code may replace
RUN_MARKERS = ("metrics.json", "model", "model.pkl", "predictions.csv", "submission")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Temporary folders of killed runs (their process is gone)."""
    for p in parent.glob(f".{name}.*-*"):
        kind, _, pid = p.name[len(name) + 2:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not a run folder (e.g. ``--out .`` or a data folder)."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the run")
        entries = list(out.iterdir())
        if entries and not any((out / m).exists() for m in RUN_MARKERS):
            raise ValueError(f"--out {out} exists and is not a run folder (no {', '.join(RUN_MARKERS[:2])}); "
                             "a run replaces its folder whole: choose another --out")


@contextmanager
def staged(out: str | os.PathLike):
    """Yield a temporary folder; on success it replaces ``out`` (renamed into place), on error it is removed."""
    out = Path(out).absolute()
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out.parent, out.name)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, out)


def publish(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
