"""NTIRE 2024 submission files: output.txt (``name,score``) and the five-line readme.txt."""
from __future__ import annotations

from pathlib import Path

import numpy as np

README_LINES = (
    "runtime per image [s] : {runtime:.5f}",
    "CPU[1] / GPU[0] : {cpu}",
    "Extra Data [1] / No Extra Data [0] : {extra}",
    "LLM[1] / Non-LLM[0] : {llm}",
    "Other description : {description}",
)


def check_names(names, split: str = "") -> None:
    """Refuse names output.txt cannot hold (called before fitting, so a bad name fails first)."""
    seen = set()
    where = f" of split {split!r}" if split else ""
    for n in (str(x) for x in names):
        if n in seen:
            raise ValueError(f"item {n!r}{where} appears twice in the submission")
        if "," in n or "\n" in n or "\r" in n:
            raise ValueError(f"item name {n!r}{where} contains a comma or newline; output.txt is `name,score` "
                             "per line (rename the file, or give the table a `name` column without commas)")
        seen.add(n)


def write_submission(folder: Path, names, scores, runtime_per_item: float, runtime_source: str,
                     description: str, cpu: bool = True, extra_data: bool = False, llm: bool = False) -> Path:
    """Write ``folder/output.txt`` and ``folder/readme.txt``; refuses NaN scores or duplicate names."""
    folder = Path(folder)
    names = [str(n) for n in names]
    scores = np.asarray(scores, dtype=float)
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"score of {names[bad[0]]!r} is {scores[bad[0]]} ({bad.size} non-finite scores)")
    check_names(names)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "output.txt").write_text("".join(f"{n},{s!r}\n" for n, s in zip(names, scores.tolist())))
    desc = f"{description} Runtime per item = {runtime_source}.".replace("\n", " ")
    text = "\n".join(README_LINES).format(runtime=runtime_per_item, cpu=int(cpu), extra=int(extra_data),
                                          llm=int(llm), description=desc)
    (folder / "readme.txt").write_text(text + "\n")
    return folder
