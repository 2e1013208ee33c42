"""The worker pool that lets a finished task add tasks (a head's refits start when its search ends)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from regressors.task_pool import SHARE_BYTES, run_graph, run_tasks, task


def _touch(path: str) -> str:
    Path(path).touch()
    return "touched"


def _wait_for(path: str, timeout: float = 60.0) -> str:
    """Returns once ``path`` exists: only possible if another task ran while this one was running."""
    end = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    return "waited"


def _describe(a) -> tuple:
    return type(a).__name__, bool(a.flags.writeable), float(np.asarray(a).sum())


def _fail(msg: str):
    raise ValueError(msg)


def test_a_follow_up_task_starts_while_a_slow_task_still_runs(tmp_path):
    """Two workers: `slow` can only finish once `follow` (added when `quick` ends) has run beside it."""
    marker = str(tmp_path / "follow-ran")
    tasks = [task("slow", _wait_for, marker, priority=(0,)), task("quick", _touch, str(tmp_path / "q"), priority=(1,))]
    added = []

    def then(key, result):
        if key != "quick":
            return []
        added.append(key)
        return [task("follow", _touch, marker, priority=(2,))]

    done = run_graph(tasks, n_jobs=2, desc="test", then=then)
    assert done == {"slow": "waited", "quick": "touched", "follow": "touched"}
    assert added == ["quick"]


def test_one_worker_runs_in_priority_order_with_follow_ups_in_between():
    order = []

    def record(name):
        order.append(name)
        return name

    tasks = [task(n, record, n, priority=(p,)) for n, p in (("c", 3), ("a", 1), ("b", 2))]
    done = run_graph(tasks, n_jobs=1, desc="test",
                     then=lambda k, r: [task("a2", record, "a2", priority=(1.5,))] if k == "a" else [])
    assert order == ["a", "a2", "b", "c"] and done["a2"] == "a2"


def test_large_arrays_reach_workers_read_only_and_whole():
    big = np.arange(SHARE_BYTES // 8 + 10, dtype=np.float64)
    small = np.arange(10.0)
    out = run_tasks(_describe, [(big,), (small,), (big,)], n_jobs=2, desc="test")
    assert out[0] == out[2] == ("memmap", False, float(big.sum()))  # mapped, not copied per task
    assert out[1] == ("ndarray", True, 45.0)


def test_results_in_task_order_and_errors_propagate():
    assert run_tasks(abs, [(-3,), (2,), (-1,)], n_jobs=2, desc="test") == [3, 2, 1]
    with pytest.raises(ValueError, match="bad head"):
        run_tasks(_fail, [("bad head",), ("bad head",)], n_jobs=2, desc="test")
    with pytest.raises(ValueError, match="engine must be"):
        run_graph([], n_jobs=1, desc="test", engine="spark")



def test_no_room_for_the_shared_arrays_is_one_clear_line(monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    big = np.zeros(SHARE_BYTES // 8 + 10)
    with pytest.raises(RuntimeError, match=r"cannot write a 1 MB array .*No space left on device.*TMPDIR.*--jobs 1"):
        run_tasks(_describe, [(big,), (big,)], n_jobs=2, desc="test")


def _write_pid_then_sleep(path: str) -> None:
    import os

    # written whole then renamed: a reader polling for the file (and the test after the pool killed this
    # worker) never sees it created but still empty
    Path(path + ".tmp").write_text(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)


def _fail_when(path: str):
    _wait_for(path)  # the slow task is running
    raise ValueError("search failed")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie awaiting its parent counts as gone
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_a_failing_task_stops_the_others_and_the_pool_works_again(tmp_path):
    """The reusable pool ran the other tasks to the end (and the process waited for them at exit)."""
    pid_file = str(tmp_path / "pid")
    with pytest.raises(ValueError, match="search failed"):
        run_graph([task("slow", _write_pid_then_sleep, pid_file, priority=(0,)),
                   task("bad", _fail_when, pid_file, priority=(1,))], n_jobs=2, desc="test")
    pid = int(Path(pid_file).read_text())
    end = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(pid), "the slow task's worker is still running"
    assert run_tasks(abs, [(-1,), (-2,)], n_jobs=2, desc="test") == [1, 2]
