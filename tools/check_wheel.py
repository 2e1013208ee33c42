"""Does `pip install` give a working tool? Build the wheel, install it into a fresh virtual environment,
and run every console job from outside the source tree (issue 23, point 3).

    python3 tools/check_wheel.py                      # build, install with constraints/ci.txt, check (~7 min)
    python3 tools/check_wheel.py --venv /tmp/x --keep # keep the environment (and reuse it with --no-install)

What it checks, from a folder outside the checkout and without PYTHONPATH (so nothing can import the
checkout's code): the packages load from the environment; `aigcq --help`, `--version`, every job's
`--help` (the jobs are read from `aigcq --help`, so a new one is checked too) and every module command's
`--help`; `aigcq demo` end to end (features, regress, ablation, score); then describe, validate, info,
errors, predict, score, merge, ablate and reproduce on the demo's data; the optional parts that the plain
install leaves out (`clip`, `ray`) refuse in one line naming the extra; and a reader that closes the pipe
early gets no traceback. Exit status 1 when any check fails (each failure is printed with its command and
output), 0 otherwise; the time of every step is printed at the end.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("aigcq", "extractors", "features_store", "regressors", "experiments")
#: module commands, with their subcommands (each gets --help)
MODULE_COMMANDS = {
    "aigcq": [], "extractors": ["list", "run"], "features_store": ["describe", "validate", "info", "errors", "merge"],
    "regressors": ["fit", "predict"], "experiments.demo": [], "experiments.ablate": [],
    "experiments.reproduce": [], "experiments.recipes": [],
}
#: optional parts the plain install leaves out: (what, the job's arguments, the extra its one line names)
REFUSALS = [
    ("clip extractor", ["features", "--track", "image", "--data", "{data}", "--extractors", "clip",
                        "--store", "clip.h5", "--no-progress"], "clip"),
    ("features --engine ray", ["features", "--track", "image", "--data", "{data}", "--extractors", "generator",
                               "--store", "ray.h5", "--engine", "ray"], "ray"),
    ("regress --engine ray", ["regress", "--track", "image", "--store", "{store}", "--out", "ray-run",
                              "--engine", "ray"], "ray"),
    # the default recipe reads CLIP: its offline features are in the demo store, then clip is refused
    ("reproduce (best_image recipe)", ["reproduce", "--track", "image", "--data", "{data}", "--store", "{store}"],
     "clip"),
]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)
    checks: int = 0

    def fail(self, what: str, cmd: list[str], proc: subprocess.CompletedProcess | None, why: str) -> None:
        out = "" if proc is None else (proc.stdout[-1500:] + proc.stderr[-2500:])
        self.failures.append(f"{what}: {why}\n  $ {shlex.join(cmd)}\n" + "\n".join("  | " + line for line in
                                                                                    out.splitlines()[-40:]))
        print(f"FAIL {what}: {why}", flush=True)


class Checker:
    def __init__(self, venv: Path, work: Path, report: Report):
        self.bin, self.work, self.report = venv / "bin", work, report
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", PYTHONNOUSERSITE="1",
                        AIGCQ_CACHE=str(work / "cache"), AIGCQ_CACHE_DIR=str(work / "table-cache"),
                        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    def run(self, what: str, cmd: list[str], *, rc: int | tuple[int, ...] = 0, out: str = "", err: str = "",
            one_line: bool = False, timeout: float = 900, stream: bool = False) -> subprocess.CompletedProcess | None:
        """Run ``cmd`` in the work folder; check its exit status, text it prints and that no traceback shows."""
        self.report.checks += 1
        t0 = time.perf_counter()
        try:
            if stream:  # long jobs: show their output as it comes, keep a copy for the report
                proc = _run_streamed(cmd, self.work, self.env, timeout)
            else:
                proc = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.report.fail(what, cmd, None, f"still running after {timeout:.0f} s")
            return None
        self.report.timings.append((what, time.perf_counter() - t0))
        codes = (rc,) if isinstance(rc, int) else rc
        if proc.returncode not in codes:
            self.report.fail(what, cmd, proc, f"exit status {proc.returncode}, expected {rc}")
        elif "Traceback (most recent call last)" in proc.stderr + proc.stdout:
            self.report.fail(what, cmd, proc, "a traceback")
        elif out and out not in proc.stdout:
            self.report.fail(what, cmd, proc, f"stdout lacks {out!r}")
        elif err and err not in proc.stderr:
            self.report.fail(what, cmd, proc, f"stderr lacks {err!r}")
        elif one_line and len([line for line in proc.stderr.splitlines() if line.strip()]) != 1:
            self.report.fail(what, cmd, proc, "more than one line on stderr")
        else:
            print(f"ok   {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
        return proc

    def aigcq(self, what: str, args: list[str], **kw):
        return self.run(what, [str(self.bin / "aigcq"), *args], **kw)

    def closed_pipe(self, what: str, args: list[str]) -> None:
        """``aigcq ... | head``, made certain: the reader closes the pipe before the job writes."""
        self.report.checks += 1
        cmd = [str(self.bin / "aigcq"), *args]
        proc = subprocess.Popen(cmd, cwd=self.work, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        proc.stdout.close()
        err = proc.stderr.read()
        rc = proc.wait(timeout=300)
        if "Traceback" in err or "BrokenPipe" in err:
            self.report.fail(what, cmd, subprocess.CompletedProcess(cmd, rc, "", err), "a traceback")
        else:
            print(f"ok   {what} (exit {rc})", flush=True)


def _run_streamed(cmd, cwd, env, timeout) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        sys.stdout.write("     " + line)
        lines.append(line)
        if time.monotonic() > deadline:
            proc.kill()
            raise subprocess.TimeoutExpired(cmd, timeout)
    proc.wait()
    text = "".join(lines)
    return subprocess.CompletedProcess(cmd, proc.returncode, text, text)


def build_wheel(python: str, dist: Path) -> Path:
    """The wheel of the working tree as it is (tracked and new files, nothing ignored): built from a copy,
    so a stale build/ folder in the checkout cannot slip old modules into it."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    src = dist / "src"
    for f in filter(None, files):
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("aigc_quality-*.whl")
    return wheel


def install(python: str, venv: Path, wheel: Path, constraints: Path) -> None:
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-c", str(constraints), str(wheel)], check=True)


def check(c: Checker, demo_args: list[str], reuse_demo: bool = False) -> None:
    py = str(c.bin / "python")
    where = c.run("packages load from the environment, not the checkout",
                  [py, "-c", "import importlib, sys; [print(importlib.import_module(p).__file__) for p in sys.argv[1:]]",
                   *PACKAGES])
    if where is not None and where.returncode == 0:
        outside = [f for f in where.stdout.split() if not f.startswith(str(c.bin.parent))]
        if outside:
            c.report.fail("packages load from the environment", [py], where, f"imported from {outside}")
    c.aigcq("aigcq --version", ["--version"], out="aigcq ")
    usage = c.aigcq("aigcq --help", ["--help"], out="jobs:")
    jobs = re.findall(r"^  (\w+)  ", usage.stdout, flags=re.M) if usage is not None else []
    if len(jobs) < 10:
        c.report.fail("aigcq --help lists the jobs", ["aigcq", "--help"], usage, f"found only {jobs}")
    for job in jobs:
        c.aigcq(f"aigcq {job} --help", [job, "--help"], out="usage:")
    for module, subs in MODULE_COMMANDS.items():
        c.run(f"python -m {module} --help", [py, "-m", module, "--help"], out="usage:")
        for sub in subs:
            c.run(f"python -m {module} {sub} --help", [py, "-m", module, sub, "--help"], out="usage:")
    c.aigcq("aigcq list", ["list"], out="effnet_lite0")
    c.run("python -m experiments.recipes", [py, "-m", "experiments.recipes"], out="best_image")  # package data

    run = c.work / "runs" / "demo"
    if reuse_demo and (run / "regress" / "model").is_dir():
        print(f"     (reusing the demo run in {run})")
    else:
        demo = c.aigcq("aigcq demo " + " ".join(demo_args), ["demo", *demo_args], out="DEMO DONE", stream=True,
                       timeout=1800)
        if demo is None or demo.returncode != 0:
            return  # the rest reads the demo's run folder
    data, store, model = run / "data" / "demo.yaml", run / "demo.h5", run / "regress" / "model"
    image = sorted((run / "data" / "heldout").rglob("*.png"))[0]
    c.aigcq("aigcq describe", ["describe", str(data)], out='"labelled"')
    c.aigcq("aigcq validate", ["validate", str(data)], out="0 problem(s)")
    c.aigcq("aigcq info", ["info", str(store)], out='"items"')
    c.aigcq("aigcq errors", ["errors", str(store), "nss"], err="failed item(s)")
    c.aigcq("aigcq predict", ["predict", "--model", str(model), "--store", str(store), "--split", "train",
                              "--allow-in-sample", "--bootstrap", "0", "--out", "predict"])
    c.aigcq("aigcq score", ["score", str(model), str(image), "--no-progress"], out="score")
    for k in (0, 1):
        c.aigcq(f"aigcq features --shard {k}/2", ["features", "--track", "image", "--data", str(data), "--extractors",
                                                  "generator", "--store", "shards.h5", "--shard", f"{k}/2",
                                                  "--no-progress"])
    c.aigcq("aigcq merge", ["merge", "merged.h5", "shards.shard-0-of-2.h5", "shards.shard-1-of-2.h5"],
            out="merged.h5")
    c.aigcq("aigcq ablate", ["ablate", "--store", str(store), "--extractors", "generator,nss", "--trials", "0",
                             "--folds", "3", "--n-boot", "0", "--jobs", "1", "--out", "ablation"], out="generator")
    # a small recipe of features the demo stored (they are found done): reproduce's whole path in seconds
    recipe = c.work / "small-recipe.yaml"
    recipe.write_text("name: small\ntracks: [image]\nextractors: [nss, generator]\nheads: [enet]\nfolds: 3\n"
                      "trials: 0\n")
    c.aigcq("aigcq reproduce (a small recipe)", ["reproduce", "--track", "image", "--data", str(data), "--store",
                                                 str(store), "--recipe", str(recipe), "--jobs", "1", "--out",
                                                 "reproduce"], out="cross-validated main")
    for what, args, extra in REFUSALS:
        args = [a.format(data=data, store=store) for a in args]
        c.aigcq(f"refusal: {what}", args, rc=2, err=f"aigc-quality[{extra}]", one_line=True)
    for args in (["--help"], ["list"], ["describe", str(data)], ["validate", str(data)], ["info", str(store)],
                 ["predict", "--help"]):
        c.closed_pipe(f"aigcq {args[0]} | (closed pipe)", args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="python3", help="the Python that builds the wheel and makes the venv")
    ap.add_argument("--venv", default=None, help="virtual environment folder (default: a temporary one)")
    ap.add_argument("--no-install", action="store_true", help="reuse --venv as it is (no build, no install)")
    ap.add_argument("--constraints", default=str(REPO / "constraints" / "ci.txt"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("--demo-args", default="", help="extra arguments for `aigcq demo` (e.g. --no-ablation)")
    ap.add_argument("--work", default=None,
                    help="run the jobs in this folder (kept; default: a temporary one outside the checkout)")
    ap.add_argument("--reuse-demo", action="store_true",
                    help="with --work: use the demo run already there instead of running `aigcq demo` again")
    args = ap.parse_args(argv)
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="aigcq-wheel-"))
    venv = Path(args.venv) if args.venv else tmp / "venv"
    work = Path(args.work).resolve() if args.work else tmp / "work"  # outside the checkout: nothing imports from it
    if work == REPO or REPO in work.parents:
        ap.error(f"--work {work} lies inside the checkout, whose packages would be imported instead of the wheel's")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        if not args.no_install:
            wheel = build_wheel(args.python, tmp / "dist")
            report.timings.append(("build the wheel", time.perf_counter() - t0))
            print(f"built {wheel.name} ({wheel.stat().st_size / 1e3:.0f} kB)", flush=True)
            t1 = time.perf_counter()
            install(args.python, venv, wheel, Path(args.constraints))
            report.timings.append(("install it into a fresh venv", time.perf_counter() - t1))
            print(f"installed into {venv} in {time.perf_counter() - t1:.0f} s", flush=True)
        check(Checker(venv, work, report), shlex.split(args.demo_args), args.reuse_demo)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    print("\ntimes: " + ", ".join(f"{w} {s:.0f} s" for w, s in report.timings if s >= 5) +
          f"; total {time.perf_counter() - t0:.0f} s")
    if report.failures:
        print(f"\n{len(report.failures)} of {report.checks} check(s) failed:\n\n" + "\n\n".join(report.failures))
        return 1
    print(f"all {report.checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
