"""Run folders: written whole or not at all, and only ever replacing what this toolkit made.

A run (model bundle, metrics, predictions, report, submission) is written into a hidden
temporary folder beside its destination and renamed into place only when complete. A
kill or an error at any point leaves the previous run as it was (or, between the two
renames of the swap, no run folder and the previous one under ``.<name>.old-<host>+<pid>``),
never a new model beside an old run's metrics or submission.

Ownership. Every folder a job writes carries :data:`MARKER` (``.aigcq-run.json``): the
run's id, the job, and the files the job wrote. An existing ``--out`` is replaced only when
every file in it is one a marker there lists (a nested run folder, e.g. ``predict/`` or
``ablation/`` inside a run, answers for its own files). So ``--out .`` in a project, a data
folder, a folder holding a stray ``predictions.csv``, or a run folder someone added notes
to is refused with one line: choose an empty or new folder. A symbolic link as ``--out`` (or
inside the folder) is refused too: a run never writes or deletes through a link. Replacing
moves the old folder aside first and then removes only the files its markers list.

Run folders written before markers existed (no ``.aigcq-run.json``) are refused like any
other folder; the message says to remove it yourself if it is an old run (docs/security.md).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

MARKER = ".aigcq-run.json"
def _looks_like_an_older_run(out: Path) -> bool:
    """An older version's run folder, unmarked (only to word the refusal: nothing is replaced on a guess)."""
    model = (out / "model" / "bundle.json").is_file() or (out / "model.pkl").is_file()
    return (out / "metrics.json").is_file() and model and not (out / ".git").exists()


class RunFolderError(ValueError):
    """An output folder this toolkit may not write into or replace (one line: which folder and what to do)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stamp() -> str:
    """``<host>+<pid>`` in the names of a run's temporary folders: on a file system several machines share, a run
    cleans up only after killed runs of its own host (another host's live run has a pid unknown here)."""
    import socket

    return f"{socket.gethostname().replace('/', '_')}+{os.getpid()}"


def _killed_here(stamp: str) -> bool:
    """Whether the run that named a folder ``...-<stamp>`` is gone: it ran on this host and its process is dead
    (``<pid>`` alone: a folder named before the host was part of the name)."""
    import socket

    host, _, pid = stamp.rpartition("+")
    if host and host != socket.gethostname().replace("/", "_"):
        return False
    return pid.isdigit() and not pid_alive(int(pid))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def read_marker(folder: Path) -> dict | None:
    """The folder's marker, or None when it has none (or one that is not ours: a link, not JSON, no run id)."""
    p = Path(folder) / MARKER
    if p.is_symlink() or not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("tool") != "aigc-quality" or not isinstance(m.get("run_id"), str):
        return None
    files = m.get("files")
    m["files"] = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    return m


def write_marker(folder: Path, job: str, run_id: str | None = None, files: list[str] | None = None) -> dict:
    """Write (or rewrite) the marker of ``folder``; ``files`` relative to it."""
    from importlib import metadata

    try:
        version = metadata.version("aigc-quality")
    except metadata.PackageNotFoundError:
        version = "unknown"
    marker = {"tool": "aigc-quality", "version": version, "job": job, "run_id": run_id or new_run_id(),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": sorted(set(files or []))}
    tmp = Path(folder) / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1) + "\n")
    os.replace(tmp, Path(folder) / MARKER)
    return marker


def record_files(folder: str | os.PathLike, paths, job: str | None = None) -> None:
    """Add files this toolkit wrote into a marked folder to its marker (e.g. a zip written after the run)."""
    folder = Path(folder)
    m = read_marker(folder)
    if m is None:
        return
    rel = [os.path.relpath(Path(p).absolute(), folder.absolute()) for p in paths]
    write_marker(folder, job or m.get("job", "?"), m["run_id"], m["files"] + [r for r in rel if not r.startswith("..")])


def _walk_files(folder: Path) -> list[str]:
    """Every entry below ``folder`` that is not a directory (links included, never followed), relative, posix."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():  # os.walk lists a link to a folder among dirnames: it is an entry, not a folder
                dirnames.remove(d)
                filenames.append(d)
        for f in filenames:
            out.append((base / f).relative_to(folder).as_posix())
    return out


def foreign_entries(folder: Path) -> list[str]:
    """Entries below ``folder`` no marker there lists (symbolic links always count: a run never writes them)."""
    folder = Path(folder)
    owned: set[str] = set()
    for dirpath, _, filenames in os.walk(folder, followlinks=False):
        if MARKER in filenames:
            m = read_marker(Path(dirpath))
            if m is not None:
                rel = Path(dirpath).relative_to(folder)
                owned.update((rel / f).as_posix() if str(rel) != "." else f for f in m["files"])
                owned.add((rel / MARKER).as_posix() if str(rel) != "." else MARKER)
    return [f for f in _walk_files(folder) if f not in owned or (folder / f).is_symlink()]


def _refusal(out: Path, what: str) -> RunFolderError:
    return RunFolderError(f"--out {out} {what}: choose an empty or new folder")


def check_replaceable(out: Path) -> None:
    """Refuse an ``--out`` this toolkit did not make: a link, a file, or a folder holding anything no marker lists."""
    out = Path(out)
    if out.is_symlink():
        raise _refusal(out, f"is a symbolic link (to {os.readlink(out)}); a run never writes through a link")
    if not out.exists():
        return
    if not out.is_dir():
        raise _refusal(out, "is a file")
    if not any(out.iterdir()):
        return
    if read_marker(out) is None:
        hint = (f"; it looks like the run folder of an older aigcq (metrics.json and a model, no {MARKER}): if it "
                "is, keep what you need and remove it yourself, or move it aside") if _looks_like_an_older_run(out) else ""
        raise RunFolderError(f"--out {out} exists and was not made by aigcq (no {MARKER}): choose an empty or new "
                             f"folder{hint}")
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise _refusal(out, f"holds files aigcq did not write ({shown}); move them out, or")


def claim_folder(out: str | os.PathLike, job: str) -> Path:
    """For jobs that add to a folder rather than replace it (``ablate``, ``demo``): the folder must be new, empty,
    or marked by an earlier run of the same job; creates it and its marker. Returns the folder."""
    out = Path(out)
    if out.is_symlink():
        raise _refusal(out, f"is a symbolic link (to {os.readlink(out)}); aigcq never writes through a link")
    if out.exists() and not out.is_dir():
        raise _refusal(out, "is a file")
    m = read_marker(out) if out.exists() else None
    if m is not None and m.get("job") != job:
        raise _refusal(out, f"is the folder of an `aigcq {m.get('job')}` run, not of `{job}`")
    if m is None and out.exists() and any(out.iterdir()):
        raise RunFolderError(f"--out {out} exists and was not made by `aigcq {job}` (no {MARKER}): choose an empty "
                             "or new folder")
    links = [f for f in _walk_files(out) if (out / f).is_symlink()] if m is not None else []
    if links:  # the job writes its files by name: through a link it would write wherever the link leads
        raise _refusal(out, f"holds a symbolic link ({', '.join(links[:5])}); aigcq never writes through a link")
    out.mkdir(parents=True, exist_ok=True)
    if m is None:
        write_marker(out, job)
    return out


def remove_own(folder: Path) -> list[str]:
    """Delete the files ``folder``'s markers list (never a link's target), then the folders left empty.
    Returns what is left (files no marker lists); the folder itself goes only when nothing is left."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return []
    foreign = set(foreign_entries(folder))
    for rel in _walk_files(folder):
        if rel not in foreign:
            try:
                (folder / rel).unlink()
            except FileNotFoundError:
                pass
    for dirpath, _, _ in sorted(os.walk(folder, followlinks=False), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)  # only an empty folder
        except OSError:
            pass
    return sorted(foreign)


def _remove_stale(parent: Path, name: str) -> None:
    """Temporary folders of killed runs (their process is gone): a ``tmp`` one holds only what that run wrote;
    an ``old`` one (a run moved aside) loses only the files its markers list."""
    for p in parent.glob(f".{glob.escape(name)}.*-*"):  # escaped: an --out named '*' matches only its own
        kind, _, stamp = p.name[len(name) + 2:].partition("-")
        if p.is_symlink() or not _killed_here(stamp):
            continue
        if kind == "tmp" and read_marker(p) is not None:  # staged() marks its folder first: unmarked, it is not ours
            shutil.rmtree(p, ignore_errors=True)
        elif kind == "tmp":
            try:
                p.rmdir()  # killed between making it and marking it: empty
            except OSError:
                pass
        elif kind == "old":
            remove_own(p)


@contextmanager
def staged(out: str | os.PathLike, job: str = "regress"):
    """Yield a temporary folder; on success it replaces ``out`` (renamed into place), on error it is removed."""
    out = Path(out).absolute()
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out.parent, out.name)
    tmp = out.parent / f".{out.name}.tmp-{_stamp()}"
    if tmp.is_symlink():
        tmp.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    run_id = write_marker(tmp, job)["run_id"]
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_marker(tmp, job, run_id, [f for f in _walk_files(tmp) if f != MARKER])
    publish(tmp, out)


def publish(tmp: Path, out: Path) -> None:
    """Swap ``tmp`` in as ``out``; the previous run is moved aside first, then only its own files are removed."""
    old = out.parent / f".{out.name}.old-{_stamp()}"
    if out.is_symlink() or out.exists():
        try:
            check_replaceable(out)  # again: something may have been added to it while the run was computed
        except RunFolderError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(out, old)
    os.replace(tmp, out)
    left = remove_own(old)
    if left:
        import sys

        print(f"note: the previous {out.name} held files aigcq did not write, added while this run was computed "
              f"({', '.join(left[:5])}); they are kept in {old}", file=sys.stderr)
