"""Disk size of each install of aigc-quality, measured from an environment where it is installed.

    python benchmarks/bench_install_size.py [--cpu-wheel /path/to/torch-X+cpu-....whl]

For each install (``pip install .``, ``.[all]``, ``.[docs]``, and ``.[all,test,docs]`` as CI and
``make`` install it) it resolves the distributions that install pulls in, from the requirements recorded by
the distributions installed in *this* environment (extras and markers evaluated), and adds up the
bytes on disk of the files each one installed (its RECORD, byte-compiled files included). Rows split
the total into torch, the NVIDIA/CUDA libraries a CUDA torch build pulls in (``nvidia-*``,
``cuda-*``), triton (its GPU kernel compiler, also pulled in by the CUDA build only), and the rest. A python3 -m venv itself (pip) is not counted.

With ``--cpu-wheel`` (a CPU-only torch wheel, e.g. from PyTorch's own package index) it also reports
the unpacked size of that wheel, and the default install with it in place of the CUDA build and its
NVIDIA libraries and triton (torchvision as installed here, 23 MB: its CPU build was not measured).
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import _results

CUDA = re.compile(r"^(nvidia-.*|cuda-.*)$")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    return {norm(d.metadata["Name"]): d for d in metadata.distributions()}


def size_on_disk(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def project_requires() -> list[str]:
    """This checkout's requirements (pyproject.toml), as metadata spells them (``x; extra == "e"``)."""
    import tomllib

    proj = tomllib.loads((_results.REPO / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra, deps in proj.get("optional-dependencies", {}).items():
        reqs += [f'{d}; extra == "{extra}"' for d in deps]
    return reqs


def closure(root: str, extras: tuple[str, ...], dists: dict) -> set[str]:
    """Distributions `pip install .[extras]` installs: this checkout's requirements, then those recorded
    by the distributions installed in this environment."""
    from packaging.requirements import Requirement

    seen: set = set()
    todo = [(norm(root), extras)]
    while todo:
        name, ex = todo.pop()
        dist = dists.get(name)
        if dist is None:
            continue
        new_extras = tuple(e for e in ex if (name, e) not in seen)
        if name in seen and not new_extras:
            continue
        seen.add(name)
        seen.update((name, e) for e in ex)
        for r in (project_requires() if name == norm(root) else dist.requires or []):
            req = Requirement(r)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *ex)):
                continue
            todo.append((norm(req.name), tuple(req.extras)))
    return {s for s in seen if isinstance(s, str)}


def wheel_unpacked(path: Path) -> int:
    with zipfile.ZipFile(path) as z:
        return sum(i.file_size for i in z.infolist())


def gb(n: int) -> float:
    return round(n / 1e9, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-wheel", type=Path, default=None, help="a CPU-only torch wheel to measure unpacked")
    args = ap.parse_args()
    dists = installed()
    if "aigc-quality" not in dists:
        sys.exit("aigc-quality is not installed in this environment (pip install -e . first)")
    sizes = {n: size_on_disk(d) for n, d in dists.items()}
    rows = []
    for label, extras in [("pip install .", ()), ("pip install '.[all]'", ("all",)),
                          ("pip install '.[docs]'", ("docs",)),
                          ("pip install '.[all,test,docs]' (make install, CI)", ("all", "test", "docs"))]:
        names = closure("aigc-quality", extras, dists)
        cuda = sum(sizes[n] for n in names if CUDA.match(n))
        torch = sizes.get("torch", 0) if "torch" in names else 0
        triton = sizes.get("triton", 0) if "triton" in names else 0
        total = sum(sizes[n] for n in names)
        rows.append({"install": label, "distributions": len(names), "total GB": gb(total), "torch GB": gb(torch),
                     "NVIDIA/CUDA libraries GB": gb(cuda), "triton GB": gb(triton),
                     "the rest GB": gb(total - torch - cuda - triton)})
    summary = {"torch installed here": dists["torch"].version if "torch" in dists else None,
               "torchvision installed here": dists["torchvision"].version if "torchvision" in dists else None}
    if args.cpu_wheel:
        cpu = wheel_unpacked(args.cpu_wheel)
        base = rows[0]
        rows.append({"install": f"pip install . with the CPU-only torch ({args.cpu_wheel.name.split('-')[1]})",
                     "distributions": None,
                     "total GB": round(base["the rest GB"] + gb(cpu), 2),
                     "torch GB": gb(cpu), "NVIDIA/CUDA libraries GB": 0.0, "triton GB": 0.0,
                     "the rest GB": base["the rest GB"]})
        summary["CPU wheel"] = f"{args.cpu_wheel.name}: {gb(args.cpu_wheel.stat().st_size)} GB to download, {gb(cpu)} GB unpacked"
    for r in rows:
        print(r)
    _results.write("install_size", rows, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
