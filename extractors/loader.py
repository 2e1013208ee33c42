"""DataLoader batches that never hang: stalled or dead workers stop the run with the cause.

A worker that cannot hand over its batch (a ``/dev/shm`` too small for it, as Docker's
default 64 MB; a decoding library deadlocked after ``fork``) used to leave
``make features`` waiting forever at 0 % CPU. Here the main process waits for a batch in
short polls; between polls it reads the workers' CPU time (``/proc/<pid>/stat``). A worker
that is slow but busy (a huge image) keeps the run alive; when no batch arrives *and* no
worker uses any CPU for ``stall_s`` seconds, the run stops with :class:`WorkerError`, which
names the cause and suggests ``WORKERS=0``. A worker that dies (killed for memory, a crash
in a decoder) stops the run the same way. Rows computed before are already in the store's
journal: nothing is lost, and a rerun continues.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

#: seconds without a batch and without worker CPU use after which the workers count as stuck
STALL_S = float(os.environ.get("AIGCQ_WORKER_STALL_S", "120"))
#: below this, /dev/shm is reported as a likely cause (Docker's default is 64 MB)
SMALL_SHM = 1 << 30


class WorkerError(RuntimeError):
    """The DataLoader workers stalled or died; the message says which, why it may be, what to do."""


def shm_text() -> str:
    """'/dev/shm: 64 MB (12 MB free)', or '' where there is none."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return ""
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    return f"/dev/shm: {total / 2**20:,.0f} MB ({free / 2**20:,.0f} MB free)"


def shm_is_small() -> bool:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return False
    return st.f_blocks * st.f_frsize < SMALL_SHM


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes (None where /proc cannot tell)."""
    if not pids:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            return None
    return total


def _advice(workers: int) -> str:
    shm = shm_text()
    return (f"Rerun with WORKERS=0 (--workers 0: decoding in the main process, slower but no hand-over), "
            f"or fewer workers{'; ' + shm + ' (Docker: --shm-size=2g)' if shm else ''}.")


def died_text(err: BaseException, workers: int) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"a DataLoader worker failed: {text} (killed for memory, e.g. by a very large image or video; out of "
            f"shared memory; or a crash in a decoder). " + _advice(workers))


def guarded(loader, workers: int, stall_s: float = STALL_S, poll_s: float | None = None) -> Iterator[Any]:
    """Iterate ``loader`` (a DataLoader built with ``timeout=poll_s``) and turn a stall or a
    dead worker into :class:`WorkerError`. ``stall_s <= 0`` waits forever (torch's behaviour)."""
    it = iter(loader)
    pids = [w.pid for w in getattr(it, "_workers", [])]  # private, but stable across torch 1.x-2.x
    poll = poll_s if poll_s is not None else float(getattr(loader, "timeout", 0) or 0)
    idle, last_cpu = 0.0, cpu_seconds(pids)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "timed out" in text and poll > 0:
                cpu = cpu_seconds(pids)
                busy = cpu is not None and last_cpu is not None and cpu - last_cpu > 0.02 * poll
                idle = 0.0 if busy else idle + poll
                last_cpu = cpu
                if stall_s <= 0 or idle < stall_s:
                    continue  # slow, not stuck: keep waiting (the iterator resumes where it was)
                raise WorkerError(
                    f"DataLoader workers handed over no batch for {idle:.0f} s while using no CPU: they are stuck "
                    f"(a batch too large for shared memory, or a decoder deadlocked after fork). "
                    + _advice(workers)) from None
            raise WorkerError(died_text(err, workers)) from None
        idle, last_cpu = 0.0, cpu_seconds(pids)
        yield batch
