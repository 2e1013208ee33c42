"""How every command-line entry point ends the same way: a reader that closes the pipe early
(``aigcq describe ... | head``) ends the command quietly, and a missing optional package is one
line naming the extra that installs it (not a ``ModuleNotFoundError`` traceback).

Kept in the lowest room and free of the project's imports, so that aigcq, extractors, regressors
and experiments all wrap their ``main`` with this one copy.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

#: extra of aigc-quality -> the distributions it adds that code imports lazily (pyproject.toml's
#: [project.optional-dependencies]; tests/test_console.py holds the two in step)
EXTRAS: dict[str, tuple[str, ...]] = {
    "clip": ("open_clip_torch", "timm"),
    "reference": ("brisque",),
    "notebook": ("nbformat", "nbclient", "ipykernel"),
    "ray": ("ray",),
}
#: importable top-level module -> (its distribution, the extra that installs it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "open_clip": ("open_clip_torch", "clip"),
    "timm": ("timm", "clip"),
    "brisque": ("brisque", "reference"),
    "nbformat": ("nbformat", "notebook"),
    "nbclient": ("nbclient", "notebook"),
    "ipykernel": ("ipykernel", "notebook"),
    "ray": ("ray", "ray"),
}
#: exit status after the reader closed stdout (as a process killed by SIGPIPE: 128 + 13)
EXIT_CLOSED_PIPE = 141


def missing_extra(err: BaseException) -> str | None:
    """The one line for an optional package that is not installed; None for any other error
    (a missing core dependency is a broken install, and its traceback is the useful report)."""
    if not isinstance(err, ModuleNotFoundError):
        return None
    top = (err.name or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    dist, extra = OPTIONAL_MODULES[top]
    return (f"{dist} is not installed (no module named {top!r}); it belongs to an optional part: "
            f"pip install 'aigc-quality[{extra}]' (or: pip install {' '.join(EXTRAS[extra])})")


def require(distributions) -> None:
    """Before any work: a ModuleNotFoundError (the one line of :func:`run_main`) when one of
    ``distributions`` is an optional package that is not installed (e.g. an extractor's ``packages``)."""
    for module, (dist, _) in OPTIONAL_MODULES.items():
        if dist in distributions and not _importable(module):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def _importable(module: str) -> bool:
    if module in sys.modules:  # None there: deliberately unimportable
        return sys.modules[module] is not None
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _stdout_to_devnull() -> None:
    """Python flushes stdout once more at exit; into a closed pipe that is a second traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (captured output): nothing to flush into a pipe
        pass


def run_main(main: Callable[..., int | None], argv: list[str] | None = None) -> int:
    """``main(argv)`` as a command: its exit status, with the two endings above."""
    try:
        return int(main(argv) or 0)
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_CLOSED_PIPE
    except ModuleNotFoundError as err:
        line = missing_extra(err)
        if line is None or os.environ.get("AIGCQ_DEBUG"):
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
