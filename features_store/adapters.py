"""Dataset adapters: label files exactly as shipped -> :class:`Manifest`.

* ``aigiqa20k``: ``info_{train,val,test}.xlsx`` (or ``.csv``, with or without a header
  row, e.g. ``info_train_noheader.csv``); images in ``train/ val/ test/`` beside them.
* ``t2vqa_db``: ``{train,val,test}.txt`` with ``name|prompt[|mos]``; generator index from
  ``NNNNN_MM.mp4`` (train only). Val and test reuse names (``00000.mp4``), so the ids of a
  split whose names collide with another split's are ``"<split>/<name>"``; the ``name``
  column keeps the bare name that submission files need.
* ``fetv``: ``labels.csv`` + ``videos/<name>``; labels static_quality, temporal_quality,
  alignment (``mos`` stays NaN unless ``mos=<column>`` is given); group = prompt_id.
* ``table``: any CSV/TSV/XLSX configured by column names (+ a regex for the generator),
  from options or a YAML file ``{adapter: table, labels: f.csv, root: media/, columns: {...}}``.
"""
from __future__ import annotations

import inspect
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .cliargs import parse_options
from .hints import read_yaml, suggest
from .manifest import Manifest, Note
from .table_cache import cached_table

SPLITS = ("train", "val", "test")
AIGIQA_GENERATOR = re.compile(r"^(?P<generator>.+)_\d+$")  # LCM_SDXL_0123 -> LCM_SDXL
T2VQA_GENERATOR = re.compile(r"^\d+_(?P<generator>\d+)$")  # 00000_01 -> "01"


# --------------------------------------------------------------------- helpers
def _read_table(path: Path, sep: str | None = None, sheet: Any = 0, header: Any = "auto",
                names: list[str] | None = None, expect: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read CSV/TSV/XLSX as strings. ``header="auto"``: when column ``names`` are given and the
    first row holds none of them (nor of ``expect``), that row is data."""
    suffix = path.suffix.lower()

    def read(h):
        if suffix in (".xlsx", ".xls", ".xlsm"):  # slow to parse: kept parsed, keyed by the file's bytes
            try:
                return cached_table(path, lambda: pd.read_excel(path, sheet_name=sheet, header=h, dtype=str),
                                    reader="read_excel", sheet=sheet, header=h)
            except (ValueError, KeyError, IndexError, zipfile.BadZipFile) as err:  # a sheet typo, not a workbook
                raise ValueError(f"{path}: cannot be read as a spreadsheet: {err}") from None
        s = sep or ("\t" if suffix in (".tsv", ".tab") else ",")
        try:
            return pd.read_csv(path, sep=s, header=h, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: the label file is empty (no header row, no rows)") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at offset "
                             f"{err.start}); save it as UTF-8 (CSV UTF-8 in a spreadsheet)") from None
        except pd.errors.ParserError as err:
            raise ValueError(f"{path}: cannot be read as a table: {str(err).strip().splitlines()[-1]}") from None

    if header == "auto":
        df = read(0)
        cols = {str(c).strip().lower() for c in df.columns}
        if names and not cols & {e.lower() for e in (*expect, *names)}:
            df = read(None)  # the first row is data
    else:
        df = read(0 if header else None)
    if all(isinstance(c, (int, np.integer)) for c in df.columns):
        if not names:
            raise ValueError(f"{path}: no header row; give the column names (option names=[...])")
        if len(names) < df.shape[1]:
            names = [*names, *[f"col{i}" for i in range(len(names), df.shape[1])]]
        df.columns = names[: df.shape[1]]
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _generator_from_name(names: pd.Series, pattern: str | re.Pattern | None) -> pd.Series:
    """Apply ``pattern`` (named group ``generator`` or group 1) to each file stem."""
    if pattern is None:
        return pd.Series([None] * len(names), index=names.index, dtype=object)
    if not isinstance(pattern, (str, re.Pattern)):
        raise ValueError(f"table: generator_regex must be a pattern in quotes, e.g. '^(?P<generator>[^_]+)_', "
                         f"got {pattern!r}")
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"table: generator_regex {getattr(pattern, 'pattern', pattern)!r} is not a valid regular "
                         f"expression ({err})") from None

    def one(name: str):
        stem = os.path.splitext(os.path.basename(str(name)))[0]  # Path(name).stem, without a Path per row
        m = rx.search(stem) or rx.search(str(name))
        if not m:
            return None
        return m.group("generator") if "generator" in rx.groupindex else m.group(1 if rx.groups else 0)

    # a list over the object array: Series.map over pandas' string arrays is several times slower
    return pd.Series([one(n) for n in names.to_numpy(dtype=object)], index=names.index, dtype=object)


def _unique_ids(df: pd.DataFrame) -> pd.Series:
    """Bare names where unique; ``split/name`` for every item of a split that collides."""
    names = np.array([str(n) for n in df["name"].to_numpy(dtype=object)], dtype=object)
    splits = np.array([str(s) for s in df["split"].to_numpy(dtype=object)], dtype=object)
    per_split = {sp: set(names[splits == sp]) for sp in pd.unique(splits)}
    colliding = {a for a in per_split for b in per_split if a != b and per_split[a] & per_split[b]}
    return pd.Series([f"{s}/{n}" if s in colliding else n for n, s in zip(names, splits)], index=df.index)


def _media_dir(root: Path, option: str | None, split: str, candidates: tuple[str, ...]) -> Path:
    """The folder holding a split's media: the option (may contain ``{split}``), else the first
    existing candidate, else the first candidate (media absent: paths still say where they belong)."""
    if option:
        p = Path(str(option).format(split=split)).expanduser()
        return p if p.is_absolute() else root / p
    for c in candidates:
        p = root / c.format(split=split)
        if p.is_dir():
            return p
    return root / candidates[0].format(split=split)


def _relativise(abs_paths: list[Path], root: Path) -> tuple[Path, list[str]]:
    """Paths relative to ``root`` when they all lie below it; else below their common folder."""
    root = root.resolve()
    resolved = [os.path.abspath(p) for p in abs_paths]
    # string prefixes, not Path.is_relative_to/relpath: 20,000 Path objects cost seconds
    top, prefix = str(root), os.path.join(str(root), "")
    if all(p.startswith(prefix) or p == top for p in resolved):
        return root, [p[len(prefix):] or "." for p in resolved]
    root = Path(os.path.commonpath([os.path.dirname(p) for p in resolved]))
    return root, [os.path.relpath(p, root) for p in resolved]


# -------------------------------------------------------------------- adapters
def load_aigiqa20k(root: Path, images: str | None = None, name: str | None = None, **unused) -> Manifest:
    _refuse_unknown("aigiqa20k", unused)
    frames = []
    for split in SPLITS:
        path = next((root / f for f in (f"info_{split}.xlsx", f"info_{split}.csv", f"info_{split}_noheader.csv")
                     if (root / f).is_file()), None)
        if path is None:
            continue
        df = _read_table(path, names=["name", "prompt", "mos"], expect=("name", "prompt"))
        df.columns = [c.lower() for c in df.columns]
        missing = {"name", "prompt"} - set(df.columns)
        if missing:
            raise ValueError(f"{path}: expected columns name, prompt[, mos]; missing {sorted(missing)}")
        df["split"] = split
        df["generator"] = _generator_from_name(df["name"], AIGIQA_GENERATOR)
        base = _media_dir(root, images, split, ("{split}", "images/{split}"))
        df["_abs"] = [os.path.join(base, n) for n in df["name"]]
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"{root}: no AIGIQA-20K label file (info_train.xlsx / info_train.csv) found")
    df = pd.concat(frames, ignore_index=True)
    df["item_id"] = _unique_ids(df)
    mroot, df["path"] = _relativise(list(df.pop("_abs")), root)
    return Manifest(df, mroot, name or "aigiqa20k", adapter="aigiqa20k", media="image")


def _read_t2vqa_lines(path: Path, split: str) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("|")
            name, mos = parts[0].strip(), None
            rest = parts[1:]
            if len(rest) >= 2:
                try:  # a trailing number is the MOS; a '|' inside a prompt stays in the prompt
                    float(rest[-1])
                    mos = rest.pop().strip()
                except ValueError:
                    pass
            rows.append({"name": name, "prompt": "|".join(rest).strip(), "mos": mos, "split": split, "line": lineno})
    return pd.DataFrame(rows, columns=["name", "prompt", "mos", "split", "line"])


def load_t2vqa_db(root: Path, videos: str | None = None, name: str | None = None, **unused) -> Manifest:
    _refuse_unknown("t2vqa_db", unused)
    frames = []
    for split in SPLITS:
        path = root / f"{split}.txt"
        if not path.is_file():
            continue
        df = _read_t2vqa_lines(path, split)
        df["generator"] = _generator_from_name(df["name"], T2VQA_GENERATOR)
        base = _media_dir(root, videos, split, ("videos/{split}", "{split}", "videos", "."))
        df["_abs"] = [os.path.join(base, n) for n in df["name"]]
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"{root}: no T2VQA-DB label file (train.txt / val.txt / test.txt) found")
    df = pd.concat(frames, ignore_index=True)
    df["item_id"] = _unique_ids(df)
    mroot, df["path"] = _relativise(list(df.pop("_abs")), root)
    return Manifest(df.drop(columns="line"), mroot, name or "t2vqa_db", adapter="t2vqa_db", media="video")


FETV_LABELS = ("static_quality", "temporal_quality", "alignment")


def load_fetv(root: Path, videos: str | None = None, mos: str | None = None, name: str | None = None,
              **unused) -> Manifest:
    _refuse_unknown("fetv", unused)
    df = _read_table(root / "labels.csv", header=True)
    if mos is not None and mos not in df:
        raise ValueError(f"fetv: mos={mos!r} is not a column; choose one of {list(FETV_LABELS)}")
    base = Path(videos).expanduser() if videos else root / "videos"
    base = base if base.is_absolute() else root / base
    out = pd.DataFrame({
        "item_id": df["name"], "name": df["name"], "prompt": df["prompt"], "generator": df["model"],
        "mos": df[mos] if mos else np.nan, "split": "train", "group": "prompt_" + df["prompt_id"].astype(str),
        **{c: df[c] for c in FETV_LABELS}, "ai_generated": pd.to_numeric(df["ai_generated"]),
        "prompt_id": df["prompt_id"],
    })
    mroot, out["path"] = _relativise([base / n for n in df["name"]], root)
    return Manifest(out, mroot, name or "fetv", label_columns=FETV_LABELS, adapter="fetv", media="video")


TABLE_GUESSES = {
    "item_id": ("item_id", "name", "image", "image_name", "video", "video_name", "filename", "file", "path"),
    "prompt": ("prompt", "text", "caption"),
    "mos": ("mos", "score", "mos_quality", "quality"),
    "split": ("split",),
    "group": ("group",),
    "generator": ("generator", "model"),
}


def load_table(labels: str | os.PathLike, root: str | os.PathLike | None = None, columns: dict | None = None,
               generator_regex: str | None = None, split: str = "train", label_columns: list[str] | None = None,
               sep: str | None = None, sheet: Any = 0, header: Any = "auto", names: list[str] | None = None,
               name: str | None = None, media: str | None = None, **unused) -> Manifest:
    """Generic label table. ``columns`` maps our names (item_id, path, prompt, mos, split, group,
    generator) to the file's; unmapped ones are guessed from common names (a guessed target is
    reported in ``Manifest.notes``). ``item_id`` may be composite: a list of columns (joined with
    ``/``) or a template such as ``"{model}/{image}"``, for tables whose file names repeat across
    generators. ``path`` defaults to the item_id (column or composite); ``generator_regex`` pulls
    the generator out of the file name; ``media`` (image | video) says what the files are (else
    the feature run recognises them by content)."""
    _refuse_unknown("table", unused)
    if media not in (None, "image", "video"):
        raise ValueError(f"table: media must be 'image' or 'video', got {media!r}.{suggest(str(media), ['image', 'video'])}")
    labels = Path(labels).expanduser()
    columns = dict(columns or {})
    label_columns = _as_list(label_columns, "label_columns")
    if columns.get("generator") is not None and generator_regex:  # one would silently win over the other
        raise ValueError(f"table: both columns.generator ({columns['generator']!r}) and generator_regex "
                         f"({generator_regex!r}) say where the generator comes from; keep one of them")
    expect = tuple(c for v in columns.values() for c in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(c, str))
    df = _read_table(labels, sep=sep, sheet=sheet, header=header, names=names, expect=expect)
    _refuse_unknown_roles(columns, df, labels)
    lower = {c.lower(): c for c in df.columns}
    notes: list[str] = []

    def pick(role: str) -> str | None:
        if role in columns:
            col = columns[role]
            if col not in df:
                raise ValueError(f"{labels}: column {col!r} (for {role}) not found.{suggest(col, df.columns)} "
                                 f"Columns are {list(df.columns)}")
            return col
        return next((lower[g] for g in TABLE_GUESSES.get(role, ()) if g in lower), None)

    id_col = None
    if _is_composite(columns.get("item_id")):
        ids = _composite_ids(df, columns["item_id"], labels)
    else:
        id_col = pick("item_id")
        if id_col is None:
            raise ValueError(f"{labels}: no item_id column; set columns.item_id (columns are {list(df.columns)})")
        ids = df[id_col]
    out = pd.DataFrame({"item_id": ids, "name": ids})
    path_col = columns.get("path")
    if path_col is not None and path_col not in df:
        raise ValueError(f"{labels}: column {path_col!r} (for path) not found.{suggest(path_col, df.columns)} "
                         f"Columns are {list(df.columns)}")
    sources: dict[str, str] = {}  # role -> the file's column it was read from
    for role in ("prompt", "mos", "split", "group", "generator"):
        col = pick(role)
        if col is not None:
            out[role] = df[col]
            sources[role] = col
            if role == "mos" and "mos" not in columns and col != "mos":
                notes.append(Note(f"{labels.name}: the target 'mos' is not mapped, so column {col!r} is used as the "
                                  f"rating to predict (guessed from its name). If it is not that rating (e.g. a sum "
                                  f"of sub-scores), map the right one: columns: {{mos: <column>}} (command line: "
                                  f"-O columns.mos=<column>)", "target"))
    if "split" not in out:
        out["split"] = split
    guessed_gen = sources.get("generator") if "generator" not in columns else None
    if generator_regex:
        out["generator"] = _generator_from_name(df[path_col] if path_col else ids, generator_regex)
        sources.pop("generator", None)
        if guessed_gen:
            notes.append(Note(f"{labels.name}: the generator comes from generator_regex {generator_regex!r}; column "
                              f"{guessed_gen!r} is not used for it (map it instead: columns: {{generator: "
                              f"{guessed_gen}}} without generator_regex)", "generator"))
        notes += _generator_notes(out, f"generator_regex {generator_regex!r}", "matches",
                                  "check case and dots (e.g. '^(?P<generator>[^_]+)_' takes all before the first '_')")
    elif "generator" in out:
        if guessed_gen and guessed_gen.lower() != "generator":
            notes.append(Note(f"{labels.name}: column {guessed_gen!r} is used as the generator (the model that made "
                              f"each item; guessed from its name). If it is something else, map the right column: "
                              f"columns: {{generator: <column>}}, or give generator_regex", "generator"))
        notes += _generator_notes(out, f"column {pick('generator')!r} (generator)", "fills",
                                  "fill the column, or give generator_regex")
    read_from = {"item_id": id_col, "name": id_col, "path": path_col or id_col, **sources}
    for c in label_columns:  # the file's column c, shadowed by a role of that name reading another column
        if c in out and c in df and read_from.get(c) != c:
            src = read_from.get(c) or "(composite ids)"
            fix = (f"to fit the file's {c!r}, map it as the main rating, columns: {{mos: {c}}}, and list {src!r} in "
                   f"label_columns" if c == "mos" else "rename that column in the file")
            raise ValueError(f"{labels}: label column {c!r} (in label_columns) has the name of the {c!r} role, which "
                             f"reads column {src!r}, so the file's {c!r} cannot be kept under its name; {fix}")
    extra = [c for c in label_columns if c not in out]
    for c in extra:
        if c not in df:
            hint = suggest(c, df.columns)
            raise ValueError(f"{labels}: label column {c!r} (in label_columns) not found.{hint} "
                             f"Columns are {list(df.columns)}")
        out[c] = df[c]
    if "mos" not in out and not extra:
        notes.append(Note(_no_target_note(labels, df), "target"))
    elif "mos" not in out:
        notes.append(Note(f"{labels.name}: no column is mapped to the target 'mos', so the default target has no "
                          f"values; fit one of the label columns: aigcq regress --target {extra[0]} (make regress "
                          f"TARGET={extra[0]}), or map the main rating: columns: {{mos: <column>}}", "target"))
    base = Path(root).expanduser() if root else labels.parent
    mroot = base.resolve()
    rel = (df[path_col] if path_col else ids).astype(str)
    # absolute paths inside the root become relative; others stay as given and fail validation
    out["path"] = [os.path.relpath(p, mroot) if os.path.isabs(p) and Path(p).is_relative_to(mroot) else p for p in rel]
    # the file's name of the target is accepted as --target too (features_store.api.resolve_target)
    aliases = {sources["mos"]: "mos"} if sources.get("mos", "mos") != "mos" else {}
    m = Manifest(out, mroot, name or labels.stem, label_columns=extra, adapter="table", media=media, notes=notes,
                 label_aliases=aliases)
    m.source_columns = {"item_id": columns.get("item_id", id_col), **sources}
    return m


def _as_list(value, option: str) -> list[str]:
    """``label_columns: mos_align`` (one name, or 'a, b') as a list: a string is not a list of characters."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"table: {option} must be a list of column names, e.g. {option}: [mos_align], got {value!r}")
    return list(value)


ROLES = ("item_id", "path", "prompt", "mos", "split", "group", "generator")


def _refuse_unknown_roles(columns: dict, df: pd.DataFrame, labels: Path) -> None:
    """``columns`` maps our roles to the file's columns; a key that is no role gets the advice that fits it."""
    bad = [k for k in columns if k not in ROLES]
    if not bad:
        return
    key = bad[0]
    value = columns[key]
    roles = f"Roles: {', '.join(ROLES)}"
    if key in df or not suggest(key, ROLES):
        # not a typo of a role (columns: {moss: ...}) but a second rating, e.g. columns: {mos_align: mos_align}
        col = key if key in df else value if isinstance(value, str) and value in df else "<column>"
        raise ValueError(f"table: {key!r} is not a column role (columns: maps roles to the file's columns; {roles}). "
                         f"A second label is listed, under its own name, in label_columns: [{col}] and fitted with "
                         f"aigcq regress --target {col} (make regress TARGET={col}); the main rating is "
                         f"columns: {{mos: <column>}}. See the Datasets page of the documentation "
                         f"(docs/datasets.md in the source tree).")
    raise ValueError(f"table: unknown column role(s) {sorted(bad)}.{suggest(key, ROLES)} {roles}")


def _no_target_note(labels: Path, df: pd.DataFrame) -> str:
    return (f"{labels.name}: no target: no column is mapped to 'mos' and none is named like one "
            f"({', '.join(TABLE_GUESSES['mos'])}); columns are {list(df.columns)}. Fine for items to score; to fit a "
            f"model, map the rating: columns: {{mos: <column>}} (command line: -O columns.mos=<column>), and further "
            f"ratings with label_columns: [<column>, ...]")


def _is_composite(spec) -> bool:
    return isinstance(spec, (list, tuple)) or (isinstance(spec, str) and "{" in spec)


def _composite_ids(df: pd.DataFrame, spec, labels: Path) -> pd.Series:
    """Item ids from several columns: a list (values joined with '/') or a format template."""
    import string

    template = "/".join("{" + str(c) + "}" for c in spec) if isinstance(spec, (list, tuple)) else spec
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"{labels}: item_id template {template!r} is not valid ({err})") from None
    if not fields:
        raise ValueError(f"{labels}: item_id template {template!r} names no column (write e.g. '{{model}}/{{name}}')")
    for f in fields:
        if f not in df:
            raise ValueError(f"{labels}: column {f!r} (in the composite item_id) not found.{suggest(f, df.columns)} "
                             f"Columns are {list(df.columns)}")
    cols = {f: df[f].astype(str).str.strip() for f in dict.fromkeys(fields)}
    blank = pd.concat([v == "" for v in cols.values()], axis=1).any(axis=1)
    ids = pd.Series([template.format(**{f: cols[f].iat[i] for f in cols}) for i in range(len(df))], index=df.index)
    return ids.where(~blank, "")  # a part missing: an empty id, reported by validation


def _generator_notes(out: pd.DataFrame, what: str, verb: str, fix: str) -> list[str]:
    """A note when some or all items get no generator from ``what``."""
    gen = out["generator"]
    missing = gen.isna() | gen.astype(str).str.strip().isin(["", "None", "nan"])
    n, k = len(gen), int(missing.sum())
    if not k or not n:
        return []
    examples = ", ".join(repr(x) for x in out.loc[missing, "name"].astype(str).head(3))
    if k == n:
        return [Note(f"{what} {verb} none of the {n} items (e.g. {examples}): no item has a generator, so the "
                     f"`generator` extractor is a constant column; {fix}", "generator")]
    return [Note(f"{what} {verb} {n - k} of {n} items; {k} have no generator (e.g. {examples}) and count as one "
                 f"unknown generator; {fix}", "generator")]


# ------------------------------------------------------------------- dispatch
ADAPTERS: dict[str, Callable[..., Manifest]] = {
    "aigiqa20k": load_aigiqa20k,
    "t2vqa_db": load_t2vqa_db,
    "fetv": load_fetv,
    "table": load_table,
}


def _refuse_unknown(adapter: str, unused: dict) -> None:
    if unused:
        skip = {"unused"} if adapter == "table" else {"root", "unused"}  # a folder adapter's root is the dataset
        known = [p for p in inspect.signature(ADAPTERS[adapter]).parameters if p not in skip]
        first = sorted(unused)[0]
        hint = _misplaced_option(adapter, first, unused[first]) or suggest(first, known)
        raise ValueError(f"adapter {adapter!r} has no option(s) {sorted(unused)}.{hint} "
                         f"Options: {', '.join(known)}")


def _misplaced_option(adapter: str, option: str, value) -> str:
    """Advice for an option a first-time author writes in the wrong place (empty when none fits)."""
    text = value if isinstance(value, str) else "<column>"
    if option in ("target", "targets", "target_column", "label", "label_column"):
        if adapter != "table":
            return (f" The target is chosen when fitting: aigcq regress --target {text} (make regress TARGET={text}); "
                    f"aigcq describe lists the dataset's labels.")
        return (f" The target is chosen when fitting, not in the dataset: list the column in label_columns: [{text}] "
                f"(the main rating: columns: {{mos: <column>}}) and fit it with aigcq regress --target {text} "
                f"(make regress TARGET={text}). See the Datasets page of the documentation "
                f"(docs/datasets.md in the source tree).")
    if adapter != "table":
        return ""
    role = option[:-len("_column")] if option.endswith("_column") else option[:-len("_col")] if option.endswith("_col") \
        else option
    role = {"id": "item_id", "name": "item_id", "image": "item_id", "video": "item_id", "file": "item_id",
            "model": "generator", "score": "mos", "text": "prompt", "caption": "prompt"}.get(role, role)
    if role in ROLES and role not in ("split", "path"):  # `split:` is an option of its own (every row's split)
        return f" Columns are mapped under columns: write columns: {{{role}: {text}}} (command line: -O columns.{role}={text})."
    return ""


def detect(folder: Path) -> str:
    if any((folder / f"info_train{ext}").is_file() for ext in (".xlsx", ".csv")) or \
            (folder / "info_train_noheader.csv").is_file() or (folder / "info_test.xlsx").is_file():
        return "aigiqa20k"
    if any((folder / f"{s}.txt").is_file() for s in SPLITS):
        return "t2vqa_db"
    if (folder / "labels.csv").is_file():
        head = (folder / "labels.csv").read_text(encoding="utf-8-sig").split("\n", 1)[0]
        if {"static_quality", "prompt_id"} <= set(head.split(",")):
            return "fetv"
    raise ValueError(
        f"{folder}: cannot tell which dataset this is (no info_train.xlsx, train.txt or FETV labels.csv). "
        "Give a label file with --adapter table (and -O columns.item_id=...), or a YAML description."
    )


def _merged(cfg: dict, options: dict) -> dict:
    """The YAML's options with the command line's on top, mapping by mapping: ``-O columns.generator=model``
    adds to the YAML's ``columns:``, it does not replace them (which would drop its ``mos:`` without a word)."""
    out = dict(cfg)
    for k, v in options.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _from_yaml(path: Path, adapter: str | None, options: dict) -> Manifest:
    cfg = read_yaml(path) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping such as {{adapter: table, labels: file.csv, columns: {{...}}}}")
    cfg = _merged(cfg, options)
    adapter = adapter or cfg.pop("adapter", "table")
    cfg.pop("adapter", None)
    if adapter not in ADAPTERS:  # before "needs path:", which would hide a typo such as `tabel`
        raise ValueError(f"{path}: unknown adapter {adapter!r}.{suggest(adapter, list(ADAPTERS))} "
                         f"Known: {', '.join(ADAPTERS)}")
    cfg.setdefault("name", path.stem)
    for k in ("labels", "root", "path", "videos", "images"):  # relative to the YAML file
        if isinstance(cfg.get(k), str) and not os.path.isabs(os.path.expanduser(cfg[k])):
            cfg[k] = str(path.parent / cfg[k])
    if adapter == "table":
        if "labels" not in cfg:
            raise ValueError(f"{path}: a table dataset needs 'labels: <file>'")
        allow_links = cfg.pop("allow_outside_links", None)
        m = load_table(**cfg)
        if allow_links is not None:
            if not isinstance(allow_links, bool):
                raise ValueError(f"{path}: allow_outside_links must be true or false, got {allow_links!r}")
            m.allow_outside_links = allow_links
        return m
    folder = cfg.pop("path", None) or cfg.pop("root", None)
    if folder is None:
        raise ValueError(f"{path}: adapter {adapter!r} needs 'path: <dataset folder>'")
    return load(folder, adapter=adapter, **cfg)


def load(source: str | os.PathLike, adapter: str | None = None, **options: Any) -> Manifest:
    allow_links = options.pop("allow_outside_links", None)
    m = _load(source, adapter, **options)
    name = str(m.name)
    if not name.strip() or name.strip() in (".", "..") or "/" in name or "\\" in name:
        # the name is part of file names (stores/<name>-<track>-<id>.h5, runs/...): a path would put them elsewhere
        raise ValueError(f"dataset name {m.name!r} cannot be part of a file name (stores/<name>-<track>-<id>.h5): "
                         "give a name without '/' or '\\' (e.g. name: agiqa3k)")
    if not getattr(m, "source", ""):  # the innermost source wins (a YAML naming a dataset folder: the folder)
        m.source = str(Path(source).expanduser().resolve())
    if allow_links is not None:
        if not isinstance(allow_links, bool):
            raise ValueError(f"allow_outside_links must be true or false, got {allow_links!r}")
        m.allow_outside_links = allow_links
    _note_generators(m)
    return m


def _note_generators(m: Manifest) -> None:
    """Items without a generator, unless the adapter said it already (e.g. a regex that matched some)."""
    if any(getattr(n, "about", "") == "generator" for n in m.notes) or not len(m.df):
        return
    m.notes = list(m.notes)
    missing = m.df["generator"].isna()
    if missing.all():
        m.notes.append(Note(f"dataset {m.name!r}: no item has a generator (no generator column or generator_regex), "
                            "so the `generator` extractor is a constant column; map one: columns: {generator: "
                            "<column>} or generator_regex: '<pattern>'", "generator"))
    elif missing.any():
        per_split = m.df.loc[missing, "split"].value_counts(sort=False)
        where = ", ".join(f"{k} {v:,}" for k, v in per_split.items())
        m.notes.append(Note(f"dataset {m.name!r}: {int(missing.sum()):,} of {len(m.df):,} items have no generator "
                            f"({where}); they count as one unknown generator", "generator"))


def _load(source: str | os.PathLike, adapter: str | None = None, **options: Any) -> Manifest:
    src = Path(source).expanduser().resolve()
    if not src.exists():
        raise FileNotFoundError(f"dataset {source!s} not found")
    if adapter is not None and adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}.{suggest(adapter, list(ADAPTERS))} Known: {', '.join(ADAPTERS)}")
    if src.is_file() and src.suffix.lower() in (".yaml", ".yml"):
        return _from_yaml(src, adapter, options)
    if src.is_file():
        if adapter not in (None, "table"):
            raise ValueError(f"adapter {adapter!r} reads a dataset folder, not the file {src}")
        return load_table(src, **options)
    adapter = adapter or detect(src)
    if adapter == "table":
        raise ValueError(f"adapter 'table' needs a label file, not the folder {src}")
    return ADAPTERS[adapter](src, **options)


def load_dataset(source: str | os.PathLike, adapter: str | None = None, **options: Any) -> Manifest:
    """Load a dataset folder or label/YAML file as a :class:`Manifest` (adapter auto-detected)."""
    return load(source, adapter=adapter, **options)


def dataset_from_args(args) -> Manifest:
    """The dataset of a command line's ``--data``, ``--adapter`` and ``-O key=value`` (``cliargs``)."""
    return load_dataset(args.data, adapter=args.adapter, **parse_options(args.data_option))
