"""What `aigcq score` scores: files, folders, lists, stdin; prompts; the media kind of each file.

* a file: scored as it is (its kind, image or video, is read from its content);
* a folder: every media file under it, recursively, in sorted order; files with a media
  extension are always taken (a broken one then fails by name), other files only when
  their content is an image or a video; text/data files and hidden files are skipped;
* a list (``.csv``, ``.tsv``, ``.json``, ``.jsonl``, ``.txt``; ``-`` reads one from stdin):
  a ``path`` column/key (or one path per line) and optional ``prompt`` and ``generator``;
  relative paths are relative to the list file (to the working folder for stdin).

Prompts, in order of precedence: the list's ``prompt``; ``--prompts FILE`` (a table or
JSON mapping a path, file name or stem to its prompt); a caption file beside the media
(``<name>.txt``, as image-caption datasets ship them).
"""
from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from extractors.media import media_kind  # noqa: F401  (by content; lives in the lower room, shared with the runner)

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm", ".avif", ".heic"}
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
MEDIA_EXT = IMAGE_EXT | VIDEO_EXT | {".gif", ".apng"}
LIST_EXT = {".csv", ".tsv", ".json", ".jsonl", ".txt"}
#: never media: skipped inside folders without opening them
DATA_EXT = LIST_EXT | {".md", ".yaml", ".yml", ".h5", ".npz", ".npy", ".py", ".zip", ".xlsx", ".pdf", ".html",
                       ".log", ".sha256", ".skops", ".pkl", ".pt", ".pth", ".bin", ".safetensors"}
PATH_COLUMNS = ("path", "file", "filename", "name", "item_id", "video", "image")


@dataclass
class Input:
    path: str  # as the user gave or listed it (the output's `path` column)
    abspath: str
    prompt: str | None = None
    generator: str | None = None


class InputError(ValueError):
    """An input argument or list that cannot be read at all (one line naming it)."""


def _looks_like_media(path: Path) -> bool:
    try:
        media_kind(str(path))
        return True
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------- lists
def _records_from_table(text: str, sep: str | None, where: str = "the list") -> list[dict]:
    import pandas as pd

    try:
        df = pd.read_csv(io.StringIO(text), sep=sep or ",", dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:  # an empty or ragged table: one line
        raise InputError(f"{where}: not a readable table ({str(err).strip().splitlines()[0]})") from None
    return df.to_dict("records")


def _records_from_json(text: str, where: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, dict):  # {path: prompt}
        return [{"path": k, "prompt": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a list of paths or of objects with a 'path'")
    return [d if isinstance(d, dict) else {"path": str(d)} for d in data]


def _records_from_jsonl(text: str, where: str) -> list[dict]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where} line {n}: not valid JSON ({err.msg})") from None
        out.append(d if isinstance(d, dict) else {"path": str(d)})
    return out


def parse_list(text: str, fmt: str, where: str) -> list[dict]:
    """Records (dicts with 'path' and optional 'prompt', 'generator') of a list in ``fmt``."""
    if fmt == "auto":
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        if first.startswith("["):
            fmt = "json"
        elif first.startswith("{"):
            fmt = "jsonl" if len([ln for ln in text.splitlines() if ln.strip()]) > 1 or first.endswith("}") else "json"
        elif any(c in first.lower().replace(" ", "").split(",") for c in PATH_COLUMNS):
            fmt = "csv"
        else:
            fmt = "txt"
    if "\x00" in text:  # binary content (an image named .txt, a damaged file): no list of paths in it
        raise InputError(f"{where}: not a text list (it holds binary data)")
    if fmt in ("csv", "tsv"):
        recs = _records_from_table(text, "\t" if fmt == "tsv" else None, where)
    elif fmt == "json":
        recs = _records_from_json(text, where)
    elif fmt == "jsonl":
        recs = _records_from_jsonl(text, where)
    else:
        recs = [{"path": ln.strip()} for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for i, r in enumerate(recs):
        r = {str(k).strip().lower(): v for k, v in r.items()}
        col = next((c for c in PATH_COLUMNS if c in r and str(r[c]).strip()), None)
        if col is None:
            raise InputError(f"{where}: entry {i + 1} has no path (columns/keys: {sorted(r)}; expected 'path')")
        out.append({"path": str(r[col]).strip(), "prompt": _text_or_none(r.get("prompt")),
                    "generator": _text_or_none(r.get("generator"))})
    return out


def _text_or_none(v) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    s = str(v)
    return s if s.strip() else None


def _list_format(path: Path) -> str:
    return {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".txt": "txt"}[path.suffix.lower()]


# ---------------------------------------------------------------- collecting
def walk_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """(media files, skipped files) under ``folder``, recursively, in sorted order."""
    media, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            p = Path(root) / f
            ext = p.suffix.lower()
            if f.startswith("."):
                skipped.append(p)
            elif ext in MEDIA_EXT:
                media.append(p)
            elif ext in DATA_EXT:
                skipped.append(p)
            elif _looks_like_media(p):  # no or unknown extension: the content decides
                media.append(p)
            else:
                skipped.append(p)
    return media, skipped


def _listed_path(base: Path, text: str) -> str:
    """The absolute path of a list entry: relative to the list; ``~`` expanded unless a file of that very name lies
    beside the list; a ``~user`` with no home (or a path the file system cannot look up) stays as written, so the
    item fails by name instead of the whole run."""
    q = Path(text)
    try:
        if not q.is_absolute() and not (base / q).exists():
            q = q.expanduser()
    except (RuntimeError, OSError, ValueError):
        pass
    return os.path.abspath(q if q.is_absolute() else base / q)


def collect(args: list[str], stdin=None) -> tuple[list[Input], list[str]]:
    """Inputs in the order given (folders expanded in sorted order), and notes for the user."""
    items: list[Input] = []
    notes: list[str] = []
    for arg in args:
        if arg == "-":
            text = (stdin or sys.stdin).read()
            for r in parse_list(text, "auto", "stdin"):
                items.append(Input(r["path"], os.path.abspath(r["path"]), r["prompt"], r["generator"]))
            continue
        p = Path(arg)
        if p.is_dir():
            media, skipped = walk_folder(p)
            if not media:
                notes.append(f"{arg}: no media files found (skipped {len(skipped)} other files)")
            elif skipped:
                names = ", ".join(s.name for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
                notes.append(f"{arg}: skipped {len(skipped)} file(s) that are not media: {names}")
            items += [Input(str(m), os.path.abspath(m)) for m in media]
        elif p.is_file() and p.suffix.lower() in LIST_EXT and not _looks_like_media(p):  # an image named .txt: media
            base = p.parent
            for r in parse_list(p.read_text(errors="replace"), _list_format(p), str(p)):
                items.append(Input(r["path"], _listed_path(base, r["path"]), r["prompt"], r["generator"]))
        else:  # a media file, or a missing path (it gets its own failed row)
            items.append(Input(arg, os.path.abspath(arg)))
    return items, notes


# ---------------------------------------------------------------- prompts
def read_prompt_table(path: str) -> dict[str, str]:
    """path/name/stem -> prompt from a CSV/TSV/JSON/JSONL table (keys as written)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {path}: file not found")
    fmt = _list_format(p) if p.suffix.lower() in LIST_EXT else "auto"
    if fmt == "txt":
        raise InputError(f"--prompts {path}: give a table (csv/tsv/json/jsonl) with a path and a prompt column")
    out = {}
    for r in parse_list(p.read_text(errors="replace"), fmt, f"--prompts {path}"):
        if r["prompt"] is not None:
            out[r["path"]] = r["prompt"]
    if not out:
        raise InputError(f"--prompts {path}: no prompts found (expected columns 'path' and 'prompt')")
    return out


def attach_prompts(items: list[Input], table: dict[str, str] | None, generator: str | None = None) -> None:
    """Fill missing prompts from the table (by path, file name or stem) or a ``<name>.txt`` caption file."""
    by_abs, by_name, by_stem = {}, {}, {}
    for k, v in (table or {}).items():
        by_abs[os.path.abspath(k)] = v
        by_name.setdefault(Path(k).name, v)
        by_stem.setdefault(Path(k).stem, v)
    for it in items:
        if it.prompt is None and table:
            p = Path(it.abspath)
            it.prompt = table.get(it.path) or by_abs.get(it.abspath) or by_name.get(p.name) or by_stem.get(p.stem)
        if it.prompt is None:
            try:  # a listed path the file system cannot even look up (too long, NUL) has no caption: it fails later
                cap = Path(it.abspath).with_suffix(".txt")
                if cap.is_file() and cap.suffix != Path(it.abspath).suffix:
                    it.prompt = cap.read_text(errors="replace").strip() or None
            except (OSError, ValueError):
                pass
        if it.generator is None and generator:
            it.generator = generator
