"""Peak memory of `nss` on one large image, each measurement in a fresh process.

    python benchmarks/bench_nss_memory.py [--side 16000] [--keep]

Writes a smooth synthetic PNG of side x side pixels (just under the 16,384^2 pixel cap at the
default), then runs ``NSS().prepare`` (decode + the 49 statistics) in a fresh Python process and
reports its peak resident memory (``ru_maxrss``) and the baseline of a process that only imported
the same modules, so the difference is what one item costs. Issue 12 measured > 6 GB here before
the bounded path (blockiness in row stripes, the decoded image copied to an array in stripes, no
EXIF copy).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _results

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, resource, sys, time
import torch  # noqa: F401  (the extractor's tensors need it: part of the baseline, not of the item)
from extractors.nss import NSS
from extractors.base import Item
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
v = NSS().prepare(Item(0, "big", sys.argv[1])) if sys.argv[1] else None
print(json.dumps({"baseline_mb": base / 1024, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t}))
"""


def make_image(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    y = (np.arange(side, dtype=np.uint32)[:, None] // 63).astype(np.uint8)
    x = (np.arange(side - 10, dtype=np.uint32)[None, :] // 63).astype(np.uint8)
    a = np.empty((side, side - 10, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = y, x, y ^ x
    Image.fromarray(a).save(path, compress_level=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=16000)
    ap.add_argument("--keep", action="store_true", help="keep the image (in the temporary folder printed)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_nss_mem_"))
    img = tmp / f"big_{args.side}.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # made in its own process: a child forked from a process that held the image would inherit its
    # peak (Linux keeps ru_maxrss across fork), and every number below would be off by it
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
                    f"from bench_nss_memory import make_image; from pathlib import Path; "
                    f"make_image(Path({str(img)!r}), {args.side})"], env=env, check=True)
    run = lambda p: json.loads(subprocess.run([sys.executable, "-c", CHILD, p], env=env, capture_output=True,  # noqa: E731
                                              text=True, check=True).stdout)
    item, idle = run(str(img)), run("")
    decoded_mb = args.side * (args.side - 10) * 3 / 2**20
    row = {"image": f"{args.side - 10}x{args.side}", "decoded_rgb_mb": round(decoded_mb),
           "peak_mb": round(item["peak_mb"]), "imports_only_mb": round(idle["peak_mb"]),
           "item_mb": round(item["peak_mb"] - idle["peak_mb"]),
           "item_over_decoded": round((item["peak_mb"] - idle["peak_mb"]) / decoded_mb, 2),
           "seconds": round(item["seconds"], 1)}
    print(json.dumps(row | {"load_average": os.getloadavg()[0]}, indent=2))
    _results.write("nss_memory", [row], {"what": "peak resident memory (ru_maxrss) of one nss item in a fresh process"})
    if not args.keep:
        img.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
