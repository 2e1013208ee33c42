"""A dataset as a table of items, and its validation.

``load_dataset(source)`` turns a dataset folder (AIGIQA-20K, T2VQA-DB, FETV, detected
from the files it ships) or a YAML/CSV/TSV/XLSX label file into a :class:`Manifest`:
one row per item with ``item_id, path, prompt, generator, mos, split, group`` plus any
extra label columns. Adapters (and ``load_dataset``) live in :mod:`features_store.adapters`.

Validation never drops silently: ``validate(policy="stop")`` raises a
:class:`ManifestError` naming every bad item; ``policy="skip"`` returns the clean
manifest *and* the list of problems for the caller to print or write.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .item import Item

#: the standard columns, in order
COLUMNS = ("item_id", "path", "prompt", "generator", "mos", "split", "group")
#: columns whose values feed extractors: a store refuses to change them for an existing item
INPUT_COLUMNS = ("path", "prompt", "generator")
POLICIES = ("stop", "skip")


class Note(str):
    """A warning about a dataset (``Manifest.notes``); ``about`` says what it concerns ("target",
    "generator"), so a command prints only those that matter to it (a features run without the
    `generator` extractor does not need to hear that no item has a generator)."""

    about: str = ""

    def __new__(cls, text: str, about: str = ""):
        obj = super().__new__(cls, text)
        obj.about = about
        return obj


@dataclass(frozen=True)
class Problem:
    """One bad item and why."""

    item_id: str
    reason: str
    row: int | None = None  # position in the manifest table (None when not row-specific)

    def __str__(self) -> str:
        where = f" (row {self.row})" if self.row is not None else ""
        return f"{self.item_id}{where}: {self.reason}"


#: in the reason of a duplicate id whose rows name other generators (file names repeating across models)
ACROSS_GENERATORS = "from another generator"


class ManifestError(ValueError):
    """Raised by ``validate(policy="stop")``; ``.problems`` holds every problem."""

    def __init__(self, name: str, problems: list[Problem], limit: int = 20,
                 source_columns: dict[str, str] | None = None):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems[:limit])
        more = f"\n  ... and {len(self.problems) - limit} more" if len(self.problems) > limit else ""
        # the composite-id advice fits ids that repeat across generators, not the same item listed twice
        across = any(p.reason.startswith("duplicate item_id") and ACROSS_GENERATORS in p.reason for p in self.problems)
        cols = source_columns or {}
        gen = cols.get("generator") or "model_column"
        iid = cols.get("item_id") if isinstance(cols.get("item_id"), str) else "name_column"
        hint = ("\nDuplicate ids: when file names repeat across generators (one folder per model), make the id "
                f"composite in the YAML table: columns: {{item_id: [{gen}, {iid}]}} "
                f"(or a template: item_id: '{{{gen}}}/{{{iid}}}')." if across else "")
        super().__init__(
            f"dataset {name!r}: {len(self.problems)} invalid item(s):\n{lines}{more}\n"
            "Fix them, or leave them out with a report: make ... ON_INVALID=skip (command line: --on-invalid skip; "
            f"Python: policy='skip').{hint}"
        )


def media_path(root: str, rel: str) -> str | None:
    """An item's media file: its ``path`` relative to the dataset root (None: the item has no media)."""
    return os.path.join(root, rel) if rel else None


def _is_blank(v: Any) -> bool:
    if isinstance(v, str):
        return not v.strip()
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):  # array-like values are not blank
        return False


def _coerce_numeric(df: pd.DataFrame, col: str, problems: list[Problem]) -> None:
    """Make ``col`` float; a value that is present but not a number becomes NaN *and* a problem."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = num.isna() & ~raw.map(_is_blank)
    for pos in np.flatnonzero(bad.to_numpy()):
        problems.append(Problem(str(df["item_id"].iat[pos]), f"{col} {raw.iat[pos]!r} is not a number", int(pos)))
    df[col] = num


class Manifest:
    """The items of one dataset (see docs/architecture.md).

    ``df`` columns: item_id (str, unique), path (str, relative to ``root``; "" when there
    is no media), prompt, generator (str or None), mos (float, NaN when unlabelled),
    split, group (CV group, default: the prompt), plus extra label columns listed in
    ``labels`` and any other adapter columns (e.g. ``name``: the file name as shipped,
    which submission files use).
    """

    media: str | None = None  # class defaults for manifests built without __init__ (a store's)
    notes: list[str] | tuple = ()
    #: the file's name of a label -> ours ({"mos_quality": "mos"} for columns: {mos: mos_quality}); never
    #: changed in place (a class default)
    label_aliases: dict[str, str] = {}
    #: role -> the file's column it was read from (table adapter), for messages that name real columns
    source_columns: dict[str, str] = {}
    #: media reached through a symlink that leads outside the root are a problem unless this is set
    #: (dataset option allow_outside_links: true; CLI -O allow_outside_links=true)
    allow_outside_links: bool = False

    def __init__(
        self,
        df: pd.DataFrame,
        root: str | os.PathLike,
        name: str,
        label_columns: list[str] | tuple[str, ...] = (),
        adapter: str = "",
        load_problems: list[Problem] | None = None,
        media: str | None = None,
        notes: list[str] | None = None,
        label_aliases: dict[str, str] | None = None,
    ):
        self.root = os.path.abspath(os.fspath(root))
        self.name = name
        self.adapter = adapter
        #: the media kind the dataset holds when its adapter knows it ("image", "video"), else None
        self.media = media
        #: things a user must hear about (a guessed target column, items without a generator, ...)
        self.notes: list[str] = list(notes or [])
        self.load_problems: list[Problem] = list(load_problems or [])
        self.label_aliases = dict(label_aliases or {})
        # the folder / label file / YAML it was loaded from (set by load_dataset): the dataset's
        # identity in default store names and stores (features_store.naming)
        self.source = ""
        self.df = self._normalise(df.reset_index(drop=True), list(label_columns))

    def _normalise(self, df: pd.DataFrame, label_columns: list[str]) -> pd.DataFrame:
        df = df.copy()
        if "item_id" not in df:
            raise ValueError(f"dataset {self.name!r}: the manifest has no item_id column")
        # plain lists over object arrays: Series.map over pandas' string arrays is ~3x slower
        ids = df["item_id"].to_numpy(dtype=object)
        df["item_id"] = pd.Series(["" if _is_blank(v) else str(v).strip() for v in ids], index=df.index)
        for col, default in (("path", ""), ("prompt", ""), ("split", "train")):
            if col not in df:
                df[col] = default
            vals = df[col].to_numpy(dtype=object)
            df[col] = pd.Series([default if _is_blank(v) else str(v) for v in vals], index=df.index)
        gens = df["generator"].to_numpy(dtype=object) if "generator" in df else [None] * len(df)
        df["generator"] = pd.Series([None if _is_blank(v) else str(v) for v in gens], index=df.index, dtype=object)
        if "group" not in df:
            df["group"] = df["prompt"]
        df["group"] = [p if _is_blank(g) else str(g)
                       for g, p in zip(df["group"].to_numpy(dtype=object), df["prompt"].to_numpy(dtype=object))]
        if "mos" not in df:
            df["mos"] = np.nan
        for col in ["mos", *[c for c in label_columns if c != "mos"]]:
            _coerce_numeric(df, col, self.load_problems)
        self._label_columns = ["mos", *[c for c in label_columns if c != "mos"]]
        extra = [c for c in df.columns if c not in COLUMNS]
        return df[[*COLUMNS, *extra]]

    # ------------------------------------------------------------------ views
    @property
    def labels(self) -> list[str]:
        """Numeric label columns that hold at least one value (``mos`` first when labelled)."""
        return [c for c in self._label_columns if c in self.df and self.df[c].notna().any()]

    def label_problems(self) -> list[str]:
        """One line per label column no model could be fitted to as the target, over its labelled splits:
        non-finite or astronomically scaled values, no values, too few, constant (features_store.targets).
        ``mos``'s single bad values are item problems (:meth:`problems`) and are not repeated here."""
        from .targets import column_problems

        out = []
        for col in self._label_columns:
            if col not in self.df or (col == "mos" and self.df[col].isna().all()):
                continue  # a dataset without ratings (e.g. a test set) is not a problem
            out += column_problems(self.df[col].to_numpy(dtype=float), self.df["item_id"].to_numpy(), col,
                                   per_item=col != "mos")
        return out

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"Manifest({self.name!r}, {len(self)} items, root={self.root!r})"

    def abspath(self, rel: str) -> str | None:
        return media_path(self.root, rel)

    def items(self, split: str | None = None) -> list[Item]:
        """Items (:class:`features_store.item.Item`) with absolute media paths; ``index`` = row here."""
        df = self.df
        rows = np.arange(len(df)) if split is None else np.flatnonzero((df["split"] == split).to_numpy())
        return [
            Item(
                index=int(i),
                item_id=df["item_id"].iat[i],
                path=self.abspath(df["path"].iat[i]),
                prompt=df["prompt"].iat[i],
                generator=df["generator"].iat[i],
            )
            for i in rows
        ]

    def subset(self, mask) -> "Manifest":
        m = Manifest.__new__(Manifest)
        m.root, m.name, m.adapter, m.load_problems = self.root, self.name, self.adapter, []
        m.media, m.notes, m.allow_outside_links = self.media, list(self.notes), self.allow_outside_links
        m.source = getattr(self, "source", "")
        m.label_aliases, m.source_columns = dict(self.label_aliases), dict(self.source_columns)
        m._label_columns = list(self._label_columns)
        m.df = self.df[np.asarray(mask, dtype=bool)].reset_index(drop=True)
        return m

    @classmethod
    def from_items(cls, items, name: str = "items", root: str = "/") -> "Manifest":
        """A manifest from ``Item`` objects (absolute paths), for ``run_extraction(items, ...)``."""
        rows = []
        for it in items:
            path = os.path.relpath(it.path, root) if it.path else ""
            rows.append({"item_id": it.item_id, "path": path, "prompt": it.prompt, "generator": it.generator})
        return cls(pd.DataFrame(rows, columns=["item_id", "path", "prompt", "generator"]), root, name)

    def summary(self) -> dict[str, Any]:
        """What ``python -m features_store describe`` prints."""
        df = self.df
        gens = df["generator"].dropna().value_counts()
        labelled = int(df["mos"].notna().sum()) if "mos" in self.labels else int(
            df[self.labels].notna().any(axis=1).sum() if self.labels else 0
        )
        return {
            "name": self.name,
            "adapter": self.adapter,
            "root": self.root,
            "items": int(len(df)),
            "labelled": labelled,
            "labels": self.labels,
            # which file column each label was read from, where the names differ (--target takes either)
            **({"label_sources": {ours: theirs for theirs, ours in self.label_aliases.items()}}
               if self.label_aliases else {}),
            "splits": {str(k): int(v) for k, v in df["split"].value_counts(sort=False).items()},
            "generators": {str(k): int(v) for k, v in sorted(gens.items())},
            "items_without_generator": int(df["generator"].isna().sum()),
            "groups": int(df["group"].nunique()),
        }

    # ------------------------------------------------------------- validation
    def problems(self, check_media: bool = True) -> list[Problem]:
        """Every problem found, in row order (parse problems first)."""
        df = self.df
        out = list(self.load_problems)
        ids = df["item_id"].to_numpy()
        seen: dict[str, int] = {}
        for pos, iid in enumerate(ids):
            if not iid:
                out.append(Problem(f"<row {pos}>", "empty item_id", pos))
            elif iid in seen:
                out.append(Problem(iid, self._duplicate_reason(seen[iid], pos), pos))
            else:
                seen[iid] = pos
        empty = np.array([not s.strip() for s in df["prompt"].to_numpy(dtype=object)], dtype=bool)
        for pos in np.flatnonzero(empty):
            out.append(Problem(ids[pos], "empty prompt", int(pos)))
        # a labelled split (some MOS present) must be labelled throughout
        mos = df["mos"].to_numpy(dtype=float)
        split = df["split"].to_numpy()
        labelled_splits = set(split[~np.isnan(mos)])
        parse_bad = {p.row for p in self.load_problems}
        for pos in np.flatnonzero(np.isin(split, list(labelled_splits)) & ~np.isfinite(mos)):
            if pos not in parse_bad:
                what = "missing (empty or NaN)" if np.isnan(mos[pos]) else f"not finite ({mos[pos]})"
                out.append(Problem(ids[pos], f"MOS {what} in labelled split {split[pos]!r}", int(pos)))
        from .targets import ASTRONOMICAL, astronomical

        for pos in astronomical(mos):  # 1e308 among ratings of 1..5: a unit or parsing error
            out.append(Problem(ids[pos], f"MOS {mos[pos]:.6g} is astronomically far from the others (more than "
                                         f"{ASTRONOMICAL:.0e} spreads from the median)", int(pos)))
        root = Path(self.root)
        outside = None if self.allow_outside_links else _OutsideLinks(self.root)
        for pos, rel in enumerate(df["path"].to_numpy()):
            if not rel:
                if check_media:
                    out.append(Problem(ids[pos], "no media path", pos))
                continue
            if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
                out.append(Problem(ids[pos], f"path {rel!r} escapes the dataset root {self.root}", pos))
            elif outside is not None and (target := outside(rel)):
                out.append(Problem(ids[pos], f"path {rel!r} is a symlink to {target}, outside the dataset root "
                                             f"{self.root}; if that is intended, set allow_outside_links: true in "
                                             "the dataset YAML (command line: -O allow_outside_links=true)", pos))
            elif check_media and not (root / rel).is_file():
                out.append(Problem(ids[pos], f"media file missing: {root / rel}", pos))
        return sorted(out, key=lambda p: -1 if p.row is None else p.row)  # stable: row order

    def _duplicate_reason(self, first: int, pos: int) -> str:
        """A repeated id is either one item listed twice (same file, same generator) or file names that
        repeat across generators (one folder per model): the two need different fixes."""
        df = self.df
        gen_a, gen_b = df["generator"].iat[first], df["generator"].iat[pos]
        if gen_a is not None and gen_b is not None and gen_a != gen_b:
            return f"duplicate item_id (first at row {first}, {ACROSS_GENERATORS}: {gen_a!r} there, {gen_b!r} here)"
        path_a, path_b = df["path"].iat[first], df["path"].iat[pos]
        if path_a != path_b:
            return (f"duplicate item_id (first at row {first}, with another file: {path_a!r}, here {path_b!r}); "
                    "make the id unique (e.g. map the path column to item_id)")
        mos_a, mos_b = df["mos"].iat[first], df["mos"].iat[pos]
        ratings = (f"rated {mos_a:g} there and {mos_b:g} here" if np.isfinite(mos_a) and np.isfinite(mos_b) and
                   mos_a != mos_b else "")
        made_by = f" by {gen_a!r}" if gen_a is not None else ""
        return (f"duplicate item_id (first at row {first}): the same item listed twice (same file{made_by}"
                f"{'; ' + ratings if ratings else ''}); keep one row" + (" (or their mean rating)" if ratings else ""))

    def validate(self, policy: str = "stop", check_media: bool = True) -> tuple["Manifest", list[Problem]]:
        """Check the items. ``stop``: raise :class:`ManifestError` listing every problem.
        ``skip``: return (manifest without the bad rows, problems) — the caller reports them.
        Of duplicate ids the first row is kept."""
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        problems = self.problems(check_media=check_media)
        if not problems:
            return self, []
        if policy == "stop":
            raise ManifestError(self.name, problems, source_columns=self.source_columns)
        bad_rows = {p.row for p in problems if p.row is not None}
        keep = np.ones(len(self.df), dtype=bool)
        keep[sorted(bad_rows)] = False
        return self.subset(keep), problems


class _OutsideLinks:
    """``rel`` -> where it really leads when that is outside ``root`` through a symlink (else None).

    Like a ``../`` path, a symlink inside the dataset root that leads outside it reaches files
    the dataset does not hold. Cheap enough for every validation: one ``lstat`` per file plus
    one ``realpath`` per folder (cached); absent files are not links (media checks name them).
    """

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self._dirs: dict[str, str] = {}

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def __call__(self, rel: str) -> str | None:
        path = os.path.join(self.root, rel)
        folder = os.path.dirname(path)
        real_dir = self._dirs.get(folder)
        if real_dir is None:
            real_dir = self._dirs[folder] = os.path.realpath(folder)
        if not self._inside(real_dir):
            return real_dir
        if os.path.islink(path):
            real = os.path.realpath(path)
            return None if self._inside(real) else real
        return None


def problems_frame(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame([{"item_id": p.item_id, "row": p.row, "reason": p.reason} for p in problems],
                        columns=["item_id", "row", "reason"])


# command-line helpers live in a light module (no pandas) so `--help`/`list` start fast
from .cliargs import add_dataset_arguments, parse_options  # noqa: E402,F401

# load_dataset and dataset_from_args live in features_store.adapters (they pick an adapter, and the
# adapters build on this module); `from features_store import load_dataset` finds them there.
