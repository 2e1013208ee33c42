"""CPU settings of an extraction process: glibc allocator thresholds and torch's thread count.

**Allocator.** With glibc's defaults a freed block larger than the mmap threshold (at most
32 MiB, dynamically) goes back to the kernel, so a CNN forward pass at batch 32 unmaps and
faults in its activation buffers on every layer: effnet_lite0 spent about a third of its time
in the kernel. ``set_malloc_thresholds`` raises ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``
(both are needed) with ``mallopt`` at start-up; DataLoader workers are forked and inherit it
(the ``MALLOC_*_`` environment variables carry it to spawned children). What it costs: up to
the threshold of free heap kept per malloc arena instead of being returned; ``trim`` hands it
back between extractors. Off: ``--malloc-threshold off`` or ``AIGCQ_MALLOC_THRESHOLD=off``.

**Threads.** torch's intra-op threads wait for each other at every barrier; when another
process takes a core, every barrier waits for a descheduled thread and throughput collapses
(prompt_minilm: 4-10 items/s with 2 threads on a busy 2-core machine, ~96 with one).
``ThreadGovernor`` sets the count from the CPUs this process may use (affinity, cgroup quota)
minus the runnable tasks of everything else (other processes and our own DataLoader workers;
now and over the last minute), and re-checks every few seconds while the run goes on. An explicit ``--threads N`` is kept.
Nothing here imports torch: threads are set only once torch is loaded by an extractor.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import sys
import time

log = logging.getLogger(__name__)

ENV_MALLOC = "AIGCQ_MALLOC_THRESHOLD"
DEFAULT_MALLOC_THRESHOLD = 1 << 30  # 1 GiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


# ------------------------------------------------------------------ allocator
def default_malloc_threshold() -> int:
    """1 GiB, or 1/16 of the machine's memory where that is less (at least 64 MiB): what the
    thresholds may keep is bounded by them, so a small machine keeps less."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return DEFAULT_MALLOC_THRESHOLD
    return max(64 << 20, min(DEFAULT_MALLOC_THRESHOLD, ram // 16))


def parse_malloc_threshold(text: str | int | None) -> int | None:
    """'off'/'0' -> None (leave glibc alone); None/''/'on'/'default' -> the default (1 GiB on a
    machine of 16 GiB or more); '512M', '1G', a number of bytes."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "on", "default", "auto")):
        return default_malloc_threshold()
    if isinstance(text, int):
        return text if text > 0 else None
    t = text.strip().lower()
    if t in ("off", "none", "no", "false", "0"):
        return None
    m = re.fullmatch(r"(\d+)\s*([kmg]?)i?b?", t)
    if not m:
        raise ValueError(f"--malloc-threshold / {ENV_MALLOC}: expected off, or a size such as 1G, 512M or a "
                         f"number of bytes; got {text!r}")
    value = int(m.group(1)) * _UNITS[m.group(2)]
    return value if value > 0 else None


_LIBC: list = []  # [handle or None], filled on first use


def _libc():
    """glibc's handle, or None elsewhere (musl, macOS). os.confstr, not platform.libc_ver(), which
    reads the whole interpreter binary (a quarter of a second of a cached run)."""
    if not _LIBC:
        handle = None
        try:
            is_glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
        except (AttributeError, ValueError, OSError):
            is_glibc = False
        if is_glibc:
            import ctypes

            try:
                handle = ctypes.CDLL(None)  # the process' own symbols: glibc's mallopt and malloc_trim
                handle.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                handle.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                handle = None
        _LIBC.append(handle)
    return _LIBC[0]


def set_malloc_thresholds(setting: str | int | None = None) -> int | None:
    """Apply the thresholds (``setting``, else $AIGCQ_MALLOC_THRESHOLD, else 1 GiB) on glibc.

    Returns the bytes applied, or None when off or not glibc (musl, macOS: nothing to do)."""
    if setting is None:
        setting = os.environ.get(ENV_MALLOC)
    value = parse_malloc_threshold(setting)
    libc = _libc()
    if value is None or libc is None:
        return None
    value = min(value, 2**31 - 1)  # mallopt takes an int
    ok = libc.mallopt(_M_MMAP_THRESHOLD, value) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, value) == 1
    if not ok:
        log.warning("mallopt refused a threshold of %d bytes; glibc's defaults stay", value)
        return None
    # spawned (not forked) children read these at start-up; forked ones inherit mallopt's state
    os.environ["MALLOC_MMAP_THRESHOLD_"] = os.environ["MALLOC_TRIM_THRESHOLD_"] = str(value)
    return value


def trim() -> None:
    """Give free heap memory back to the kernel (between extractors: bounds what the thresholds keep)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# -------------------------------------------------------------------- threads
def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 cpu.max or v1 cfs_quota_us), None if unlimited."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 unified
            candidates.append(("v2", f"/sys/fs/cgroup{path}/cpu.max"))
            candidates.append(("v2", "/sys/fs/cgroup/cpu.max"))
        elif "cpu" in controllers.split(","):
            for mount in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
                candidates.append(("v1", f"{mount}{path}"))
                candidates.append(("v1", mount))
    for kind, path in candidates:
        try:
            if kind == "v2":
                with open(path) as fh:
                    quota, period = fh.read().split()[:2]
                if quota != "max":
                    return int(quota) / int(period)
                return None
            with open(f"{path}/cpu.cfs_quota_us") as fh:
                quota = int(fh.read())
            with open(f"{path}/cpu.cfs_period_us") as fh:
                period = int(fh.read())
            return quota / period if quota > 0 else None
        except (OSError, ValueError):
            continue
    return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _nr_running() -> int | None:
    """Runnable tasks on the machine right now (the 4th field of /proc/loadavg)."""
    try:
        with open("/proc/loadavg") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running() -> int:
    """Runnable threads of this process (its spinning OpenMP threads and the caller included)."""
    n = 0
    for stat in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(stat) as fh:
                text = fh.read()
        except OSError:
            continue
        n += text[text.rindex(")") + 2] == "R"
    return n


def busy_elsewhere(samples: int = 7, interval_s: float = 0.003, own: int = 1) -> float | None:
    """Runnable tasks not of this process (other processes, our DataLoader workers): the larger of
    the median of a few instant samples and the 1-minute load average less our ``own`` threads.
    The load average lags, which is the point: a machine busy a moment ago is taken as still busy,
    because one thread too many collapses throughput (a third of it or worse) while one too few
    costs at most the speed-up of that thread. None where /proc is not there (load unknown)."""
    values = []
    for i in range(samples):
        total = _nr_running()
        if total is None:
            return None
        values.append(max(0, total - max(1, _own_running())))
        if i + 1 < samples:
            time.sleep(interval_s)
    instant = float(sorted(values)[len(values) // 2])  # the median (samples is odd)
    try:
        recent = os.getloadavg()[0] - own
    except (AttributeError, OSError):
        recent = 0.0
    return max(instant, recent, 0.0)


def auto_threads(cpus: int | None = None, busy: float | None = None, own: int = 1) -> int:
    """Threads that keep every one on a core of its own: usable CPUs minus the busy elsewhere (>= 1).
    ``own``: the threads this process runs now (they are in the load average)."""
    cpus = usable_cpus() if cpus is None else cpus
    if busy is None:
        busy = busy_elsewhere(own=own)
    if busy is None:  # no way to see the load: the CPUs we may use
        return cpus
    return max(1, min(cpus, int(cpus - busy + 0.5)))


def parse_threads(text: str | int | None) -> int | None:
    """'auto'/None -> None (the governor chooses); a positive int -> that many threads."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"--threads: expected a positive number or 'auto', got {text!r}") from None
    if n < 1:
        raise ValueError(f"--threads: expected a positive number or 'auto', got {text!r}")
    return n


class ThreadGovernor:
    """Sets torch's intra-op threads for the compute part of a run.

    ``threads=N`` pins N (set once, when torch is loaded). ``threads=None`` (auto) chooses with
    :func:`auto_threads` when the first batch is computed and again every ``every_s`` seconds,
    so a run that starts on an idle machine drops to fewer threads when others start, and back.
    Nothing happens until torch is imported by the extractor: a cached run never loads it.
    """

    def __init__(self, threads: int | None = None, every_s: float = 5.0):
        self.threads, self.every_s = threads, every_s
        self.current: int | None = None
        self._next = 0.0
        self.changes: list[tuple[float, int]] = []  # (monotonic time, threads), for benchmarks/logs

    def tick(self) -> None:
        """Call before each batch's compute: cheap (a clock read) except every ``every_s`` seconds."""
        now = time.monotonic()
        if now < self._next:
            return
        torch = sys.modules.get("torch")
        if torch is None:  # the extractor does not use torch (yet): look again next batch
            return
        if self.threads is not None:
            want = self.threads
            self._next = math.inf  # explicit: set once
        else:
            want = auto_threads(own=self.current or 1)
            self._next = now + self.every_s
        if want != self.current:
            torch.set_num_threads(want)
            if self.current is not None:
                log.info("torch threads %d -> %d (load changed)", self.current, want)
            self.current = want
            self.changes.append((now, want))
