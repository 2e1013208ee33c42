"""The hostile cases of issue 22, run against a demo run: ``python tools/hostile_checks.py [runs/demo]``.

After ``make demo``, from a fresh clone:

1. a ``reiqa`` block with ``allow_pickle: true`` and ``content_ckpt`` pointing at a pickle placed in the bundle
   (its identity and key what the extractor computes) is added to a copy of the demo bundle; ``aigcq score`` must
   run nothing (the pickle writes a marker file when unpickled);
2. ``aigcq regress --out DIR`` on a folder holding ``.git/``, ``src/``, ``thesis.tex`` and a stray
   ``predictions.csv`` must leave them in place;
3. a copy of the bundle whose generator vocabulary is reversed must be refused (or score exactly as the original).

Prints one line per check and exits 1 if any fails. Everything is written under a temporary folder.
"""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


class Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _aigcq(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aigcq", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return lines[-1] if lines else proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def main(argv: list[str] | None = None) -> int:
    from extractors.registry import get_extractor

    demo = Path((argv or sys.argv[1:] or ["runs/demo"])[0])
    bundle, store = demo / "regress" / "model", demo / "demo.h5"
    heldout = demo / "data" / "heldout" / "list.csv"
    ok = True
    with tempfile.TemporaryDirectory(prefix="aigcq-hostile-") as tmp:
        tmp = Path(tmp)
        baseline = _aigcq("score", bundle, heldout, "--cache", tmp / "cache.h5", "--no-progress", "--quiet")
        assert baseline.returncode == 0, baseline.stderr

        # 1. the crafted reiqa bundle
        crafted, marker = tmp / "crafted", tmp / "PWNED"
        shutil.copytree(bundle, crafted)
        (crafted / "content_aware_r50.pth").write_bytes(pickle.dumps(Planted(marker)))
        options = {"content_ckpt": str(crafted / "content_aware_r50.pth"), "quality_ckpt": None,
                   "encoders": ["content"], "max_side": 64, "allow_pickle": True}
        ex = get_extractor({"name": "reiqa", **options})
        info = json.loads((crafted / "bundle.json").read_text())
        info["features"].append({"block": "reiqa", "key": ex.key(), "name": "reiqa", "kind": "image",
                                 "dim": ex.output_dim(), "identity": json.loads(json.dumps(ex.identity())),
                                 "options": options})
        if info.get("kept_blocks") is not None:
            info["kept_blocks"].append("reiqa")
        (crafted / "bundle.json").write_text(json.dumps(info, indent=2))
        proc = _aigcq("score", crafted, heldout, "--cache", tmp / "c2.h5", "--no-progress")
        good = not marker.exists() and proc.returncode == 2
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} crafted reiqa bundle: exit {proc.returncode}, pickle "
              f"{'RAN' if marker.exists() else 'did not run'}; {_error_line(proc)[:200]}")

        # 2. regress --out on a project folder
        project = tmp / "project"
        (project / ".git").mkdir(parents=True)
        (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (project / "src").mkdir()
        (project / "src" / "main.py").write_text("print('mine')\n")
        (project / "thesis.tex").write_text("\\documentclass{article}\n")
        (project / "predictions.csv").write_text("item_id,prediction\n")
        proc = _aigcq("regress", "--track", "image", "--store", store.absolute(), "--out", ".", "--trials", "0",
                      "--bootstrap", "0", cwd=project)
        kept = all((project / p).exists() for p in (".git/HEAD", "src/main.py", "thesis.tex"))
        ok &= kept
        print(f"{'PASS' if kept else 'FAIL'} regress --out . in a project: exit {proc.returncode}, .git/src/thesis.tex "
              f"{'in place' if kept else 'GONE'}; {_error_line(proc)[:200]}")

        # 3. the generator vocabulary reversed
        rev = tmp / "reversed"
        shutil.copytree(bundle, rev)
        info = json.loads((rev / "bundle.json").read_text())
        info["generator_vocabulary"] = info["generator_vocabulary"][::-1]
        for f in info["features"]:
            if f.get("vocabulary"):
                f["vocabulary"] = f["vocabulary"][::-1]
        (rev / "bundle.json").write_text(json.dumps(info, indent=2))
        proc = _aigcq("score", rev, heldout, "--cache", tmp / "cache.h5", "--no-progress", "--quiet")
        good = proc.returncode == 2 or (proc.returncode == 0 and proc.stdout == baseline.stdout)
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} reversed generator vocabulary: exit {proc.returncode}"
              + (", scores identical" if proc.returncode == 0 and proc.stdout == baseline.stdout else "")
              + (", SCORES CHANGED" if proc.returncode == 0 and proc.stdout != baseline.stdout else "")
              + f"; {_error_line(proc)[:200]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
