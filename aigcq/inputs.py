"""What `aigcq score` scores: files, folders, lists, stdin; prompts; the media kind of each file.

* a file: scored as it is when its content is an image or a video (whatever its name says);
  otherwise read as a list (below) when it is one; otherwise it gets a failed row naming it;
* a folder: every media file under it, recursively, in sorted order; files with a media
  extension are always taken (a broken one then fails by name), other files only when
  their content is an image or a video; text/data files and hidden files are skipped.
  Symlinked folders are followed; one leading to a folder above it (a loop) or to one already
  walked (a second link to the same folder) is skipped with a note naming it;
* a list (``-`` reads one from stdin), decided by content:

  - JSON (a list of paths or of objects with a ``path``, or ``{path: prompt}``), JSONL (one
    such object or string per line), CSV/TSV with a header holding a ``path`` column
    (and optional ``prompt``, ``generator``): values are taken exactly as written, spaces
    included; quote a CSV cell as CSV does (``"a, b.png"``);
  - otherwise one path per line, exactly as written: leading/trailing spaces and ``#`` are
    part of the name (no comments, nothing stripped but the line break; a file whose lines
    all end in CRLF, the last one perhaps without a line break, loses the CR). A path holding a
    line break needs a JSON list;
  - lists and ``--prompts`` tables are read as UTF-8 (a byte order mark is dropped); bytes that
    are not UTF-8 (a file name in another encoding) are kept as they are, stdin included;
  - a ``.txt`` (or any non-media file) is a list only when some line names an existing file;

  relative paths are relative to the list file (to the working folder for stdin).

Prompts, in order of precedence: the list's ``prompt``; ``--prompts FILE`` (a table or JSON
mapping a path to its prompt; see :func:`read_prompt_table`); a caption file beside the media
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
    error: str | None = None  # why it cannot be scored, found while collecting (its row fails with this)


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

    # every cell as written: no NA guessing, no stripping (pandas keeps spaces of unquoted cells)
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
    return _records_from_data(data, where)


def _records_from_data(data, where: str) -> list[dict]:
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, dict):  # {path: prompt}
        return [{"path": k, "prompt": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a list of paths or of objects with a 'path'")
    return [d if isinstance(d, dict) else {"path": str(d)} for d in data]


def _records_from_jsonl(text: str, where: str) -> list[dict]:
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where} line {n}: not valid JSON ({err.msg})") from None
        out.append(d if isinstance(d, dict) else {"path": str(d)})
    return out


def decode_list(raw: bytes) -> str:
    """A list's or table's text: UTF-8 with a leading byte order mark dropped (Windows editors write one; it is
    the encoding's mark, not part of the first name), and bytes that are not UTF-8 kept as surrogate escapes (a
    file name in any encoding reaches the file system unchanged)."""
    return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")


def _read_stdin(stdin) -> str:
    """stdin as :func:`decode_list` reads a file: from its bytes when it has them (a text stdin is strict
    UTF-8 in a UTF-8 locale: one non-UTF-8 name refused the whole list)."""
    raw = getattr(stdin, "buffer", None)
    if raw is not None:
        return decode_list(raw.read())
    return stdin.read().removeprefix("\ufeff")


def text_lines(text: str) -> list[str]:
    """The lines of a plain list, exactly: split at line feeds only; a CR is dropped only when every line
    ends in CRLF (a file saved on Windows; its last line may lack a line break); empty lines are not paths."""
    lines = text.split("\n")
    ended = lines[:-1]  # the lines followed by a line feed (the last piece is what follows the last one)
    if ended and all(ln.endswith("\r") for ln in ended):
        lines = [ln[:-1] for ln in ended] + lines[-1:]
    return [ln for ln in lines if ln != ""]


def _sniff(text: str, base: Path | None) -> str:
    """A list's format from its content: json, jsonl, csv, tsv or txt (see the module doc)."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            json.loads(stripped)
            return "json"
        except json.JSONDecodeError:
            pass
        lines = [ln for ln in text.split("\n") if ln.strip()]
        try:
            if all(isinstance(json.loads(ln), (dict, str)) for ln in lines):
                return "jsonl"
        except json.JSONDecodeError:
            pass
        return "txt"  # a file named [x].png or {x}.png: a path, not a JSON document
    first = text.split("\n", 1)[0].rstrip("\r")
    for sep, fmt in (("\t", "tsv"), (",", "csv")):
        cells = [c.strip().lower() for c in first.split(sep)]
        if sep in first and any(c in PATH_COLUMNS for c in cells) and not _exists(first, base):
            return fmt
    return "txt"


def _exists(path: str, base: Path | None) -> bool:
    try:
        q = Path(_listed_path(base, path)) if base is not None else Path(path).expanduser()
        return q.exists()
    except (OSError, ValueError, RuntimeError):
        return False


def parse_list(text: str, fmt: str, where: str, base: Path | None = None) -> list[dict]:
    """Records (dicts with 'path' and optional 'prompt', 'generator') of a list in ``fmt`` ("auto": from its
    content). Paths are kept exactly as written."""
    if fmt == "auto":
        fmt = _sniff(text, base)
    if "\x00" in text:  # binary content (an image named .txt, a damaged file): no list of paths in it
        raise InputError(f"{where}: not a text list (it holds binary data)")
    if fmt in ("csv", "tsv"):
        recs = _records_from_table(text, "\t" if fmt == "tsv" else None, where)
    elif fmt == "json":
        recs = _records_from_json(text, where)
    elif fmt == "jsonl":
        recs = _records_from_jsonl(text, where)
    else:
        recs = [{"path": ln} for ln in text_lines(text)]
    out = []
    for i, r in enumerate(recs):
        r = {str(k).strip().lower(): v for k, v in r.items()}
        col = next((c for c in PATH_COLUMNS if c in r and r[c] is not None and str(r[c]) != ""), None)
        if col is None:
            raise InputError(f"{where}: entry {i + 1} has no path (columns/keys: {sorted(r)}; expected 'path')")
        out.append({"path": str(r[col]), "prompt": _text_or_none(r.get("prompt")),
                    "generator": _text_or_none(r.get("generator"))})
    return out


def _text_or_none(v) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    s = str(v)
    return s if s.strip() else None


# ---------------------------------------------------------------- collecting
def walk_folder(folder: Path) -> tuple[list[Path], list[Path], list[str]]:
    """(media files, skipped files, notes) under ``folder``, recursively, in sorted order.

    Symlinked folders are followed; one leading to a folder that holds it (``up -> ../..``, ``/``: a loop),
    or to one already walked (a second link to the same folder), is skipped and named in a note."""
    media, skipped, notes = [], [], []
    seen = {os.path.realpath(folder)}
    for root, dirs, files in os.walk(folder, followlinks=True):
        keep = []
        here = os.path.realpath(root)
        for d in sorted(d for d in dirs if not d.startswith(".")):
            full = os.path.join(root, d)
            real = os.path.realpath(full)
            if real in seen:
                notes.append(f"{full}: a link to {real}, which is already scanned (a loop or a second link): skipped")
                continue
            if os.path.commonpath([real, here]) == real:  # a folder above the one given (``/`` too): walking it loops
                notes.append(f"{full}: a link to {real}, a folder that holds it (a loop): skipped")
                continue
            seen.add(real)
            keep.append(d)
        dirs[:] = keep
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
    return media, skipped, notes


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


def _read_list_file(p: Path) -> tuple[list[dict] | None, str | None]:
    """(records, None) when the file is a list by its content, else (None, why it is neither media nor a list)."""
    try:
        raw = p.read_bytes()
    except OSError as err:
        return None, f"cannot read {p} ({err.strerror or err})"
    if b"\0" in raw[:8192]:
        return None, None  # binary: not a list; the media check gives the reason
    text = decode_list(raw)
    fmt = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}.get(p.suffix.lower(), "auto")
    if fmt == "auto":
        fmt = _sniff(text, p.parent)
    recs = parse_list(text, fmt, str(p), p.parent)
    if fmt == "txt" and not any(_exists(r["path"], p.parent) for r in recs):
        return None, (f"not an image or video, nor a list of paths (no line of it names an existing file): {p}")
    return recs, None


def collect(args: list[str], stdin=None) -> tuple[list[Input], list[str]]:
    """Inputs in the order given (folders expanded in sorted order), and notes for the user."""
    items: list[Input] = []
    notes: list[str] = []
    for arg in args:
        if arg == "-":
            text = _read_stdin(stdin or sys.stdin)
            for r in parse_list(text, "auto", "stdin", Path.cwd()):
                items.append(Input(r["path"], os.path.abspath(r["path"]), r["prompt"], r["generator"]))
            continue
        p = Path(arg)
        if p.is_dir():
            media, skipped, link_notes = walk_folder(p)
            notes += link_notes
            if not media:
                notes.append(f"{arg}: no media files found (skipped {len(skipped)} other files)")
            elif skipped:
                names = ", ".join(s.name for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
                notes.append(f"{arg}: skipped {len(skipped)} file(s) that are not media: {names}")
            items += [Input(str(m), os.path.abspath(m)) for m in media]
        elif p.is_file() and not _looks_like_media(p):  # by content: a list, or an input that fails by name
            recs, why = _read_list_file(p)
            if recs is None:
                items.append(Input(arg, os.path.abspath(arg), error=why))
                continue
            for r in recs:
                items.append(Input(r["path"], _listed_path(p.parent, r["path"]), r["prompt"], r["generator"]))
        else:  # a media file, or a missing path (it gets its own failed row)
            items.append(Input(arg, os.path.abspath(arg)))
    return items, notes


# ---------------------------------------------------------------- prompts
@dataclass
class PromptTable:
    """``--prompts``: keys resolved to absolute paths relative to the table's folder; a key that is a bare file
    name (no folder) also matches any input of that name; a bare key without a media extension (an id such as
    ``img.001`` or ``cat``) also matches any input whose name is the key plus an extension (``img.001.png``)."""
    where: str
    by_path: dict[str, str]
    by_name: dict[str, str]  # bare key -> prompt
    by_stem: dict[str, str]  # bare key without a media extension -> prompt

    def __len__(self) -> int:
        return len(self.by_path)

    def lookup(self, it: Input) -> str | None:
        """The prompt of ``it``: keyed by its path, else by its file name, else by its name less the extension.
        (One key each: a bare key given twice with different prompts is refused when the table is read.)"""
        p = Path(it.abspath)
        for index, part in ((self.by_path, os.path.normpath(it.abspath)), (self.by_name, p.name),
                            (self.by_stem, p.stem)):
            hit = index.get(part)
            if hit is not None:
                return hit
        return None


def read_prompt_table(path: str) -> PromptTable:
    """path -> prompt from a CSV/TSV/JSON/JSONL table. Keys are paths relative to the table's folder (or
    absolute); a key twice with different prompts is refused, naming it."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {path}: file not found")
    fmt = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}.get(p.suffix.lower(), "auto")
    text = decode_list(p.read_bytes())
    if fmt == "auto":
        fmt = _sniff(text, p.parent)
    if fmt == "txt":
        raise InputError(f"--prompts {path}: give a table (csv/tsv/json/jsonl) with a path and a prompt column")
    where = f"--prompts {path}"
    table = PromptTable(where, {}, {}, {})
    first_key: dict[str, str] = {}
    for r in parse_list(text, fmt, where, p.parent):
        if r["prompt"] is None:
            continue
        key = r["path"]
        q = Path(key).expanduser()
        resolved = os.path.normpath(q if q.is_absolute() else p.parent.absolute() / q)
        if resolved in table.by_path and table.by_path[resolved] != r["prompt"]:
            raise InputError(f"{where}: {key!r} is given twice with different prompts "
                             f"({_short(table.by_path[resolved])!r} and {_short(r['prompt'])!r}"
                             + (f"; the first as {first_key[resolved]!r}" if first_key[resolved] != key else "")
                             + "): keep one row per file")
        table.by_path[resolved] = r["prompt"]
        first_key.setdefault(resolved, key)
        if os.sep not in key and "/" not in key:  # a bare name: matches by file name anywhere
            table.by_name[key] = r["prompt"]
            if Path(key).suffix.lower() not in MEDIA_EXT:  # an id, not a file name: matches any extension
                table.by_stem[key] = r["prompt"]  # (a.png's prompt is not a.jpg's)
    if not table.by_path:
        raise InputError(f"{where}: no prompts found (expected columns 'path' and 'prompt')")
    return table


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def attach_prompts(items: list[Input], table: PromptTable | None, generator: str | None = None) -> None:
    """Fill missing prompts from the table or a ``<name>.txt`` caption file beside the media."""
    for it in items:
        if it.prompt is None and table:
            it.prompt = table.lookup(it)
        if it.prompt is None:
            try:  # a listed path the file system cannot even look up (too long, NUL) has no caption: it fails later
                cap = Path(it.abspath).with_suffix(".txt")
                if cap.is_file() and cap.suffix != Path(it.abspath).suffix:
                    it.prompt = cap.read_text(errors="replace").strip() or None
            except (OSError, ValueError):
                pass
        if it.generator is None and generator:
            it.generator = generator
