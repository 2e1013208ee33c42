"""Reading a track's features from the store (only through features_store's API)."""
from __future__ import annotations

import os
import shlex
import warnings
from dataclasses import dataclass, field

import h5py
import numpy as np

#: store attributes (on /features/<key>) that may record extraction time, in seconds per item
RUNTIME_ATTRS = ("seconds_per_item", "runtime_per_item", "sec_per_item")


@dataclass
class TrackData:
    X: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray
    groups: np.ndarray
    generators: np.ndarray
    names: np.ndarray  # the challenge's file names (``name`` column) where the store has them
    blocks: dict[str, list[int]]
    keys: dict[str, str]  # block name -> store key
    split: str | None
    runtime: dict[str, float] = field(default_factory=dict)  # key -> seconds per item, where recorded
    devices: dict[str, str] = field(default_factory=dict)  # key -> device the extraction ran on, where recorded
    vocabularies: dict[str, list[str]] = field(default_factory=dict)  # generator block -> vocabulary of its columns
    incomplete: list[dict] = field(default_factory=list)  # keys with items not done (allow_incomplete only)


def store_keys_by_name(store_path) -> dict[str, list[str]]:
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        out: dict[str, list[str]] = {}
        for k in st.keys():
            out.setdefault(st.config(k)["name"], []).append(k)
        return out


def _runtime_attrs(store_path, keys) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds per item and device recorded by the extraction runs, where the store has them (best effort)."""
    runtime, devices = {}, {}
    try:
        with h5py.File(store_path, "r") as f:
            for k in keys:
                attrs = f[f"features/{k}"].attrs if f"features/{k}" in f else {}
                for a in RUNTIME_ATTRS:
                    if a in attrs:
                        runtime[k] = float(attrs[a])
                        break
                if "device" in attrs:
                    devices[k] = str(attrs["device"])
    except (OSError, KeyError):
        pass
    return runtime, devices


def splits_of(store_path, target: str = "mos") -> dict[str, bool]:
    """{split: labelled?}; labelled means every item of that split has a finite target."""
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        df = st.df
        out = {}
        for s in df["split"].dropna().unique():
            col = df.loc[df["split"] == s, target] if target in df else None
            out[str(s)] = bool(col is not None and np.isfinite(col.to_numpy(dtype=float)).all())
        return out


class IncompleteFeaturesError(RuntimeError):
    """A split to fit, score or submit lacks features for some of its items."""


def completeness(st, keys: list[str], split: str | None) -> list[dict]:
    """Per key, the items of ``split`` that are not done (failed or pending); empty when all are done."""
    from features_store.store import DONE, FAILED, PENDING

    df = st.columns(["item_id", "split"])
    rows = np.arange(len(df)) if split is None else np.flatnonzero((df["split"] == split).to_numpy())
    out = []
    for k in keys:
        s = st.status(k)[rows]
        if (s != DONE).any():
            bad = df["item_id"].to_numpy()[rows[s != DONE]]
            out.append({"key": k, "split": split, "items": int(len(rows)), "done": int((s == DONE).sum()),
                        "failed": int((s == FAILED).sum()), "pending": int((s == PENDING).sum()),
                        "examples": [str(x) for x in bad[:3]]})
    return out


def fill_command(st, keys: str | list[str], track: str | None) -> str:
    """The command that computes the missing items of a key (or of several keys; failed ones are retried)."""
    specs = [_spec(st, k) for k in ([keys] if isinstance(keys, str) else keys)]
    # the dataset as `--data` was given (a YAML or label file: the media root alone would not load)
    data = st.meta.get("source") or st.meta.get("root") or "<dataset>"
    return (f"aigcq features --track {track or '<image|video>'} --data {shlex.quote(str(data))} "
            f"--store {shlex.quote(str(st.path))} --extractors {shlex.quote(','.join(specs))}")


def _spec(st, key: str) -> str:
    """The ``--extractors`` entry that rebuilds ``key``."""
    try:
        from extractors.registry import options_from_identity, spec_string

        ident = st.config(key)["identity"]
        return spec_string(ident["name"], options_from_identity(ident))
    except Exception:  # an identity this version cannot rebuild: name the key's extractor at least
        return st.config(key)["name"] or key.rsplit("-", 1)[0]


class StaleMediaError(RuntimeError):
    """Features to read were computed from media files that have changed, or are gone, since."""


#: how many item ids a refusal names (then a count)
SHOW_ITEMS = 5


def check_media_unchanged(store_path, extractors, split: str | None, track: str | None) -> int:
    """Refuse (StaleMediaError) when the media of the items of ``split`` (None: every item) changed since
    the features of ``extractors`` (names or keys; default all) were computed from them: one ``stat`` per
    item against the fingerprints the features run recorded (features_store.fingerprint.changed_media;
    a label-only store records none). Returns the number of items checked."""
    from features_store import FeatureStore, resolve_keys
    from features_store.fingerprint import changed_media

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        keys = resolve_keys(st, extractors if extractors else st.keys())
        rows = None if split is None else np.flatnonzero((st.columns(["split"])["split"] == split).to_numpy())
        drift = changed_media(st, keys, rows)
        if drift:
            raise StaleMediaError(stale_media_message(st, drift, keys, track))
        return drift.checked


def stale_media_message(st, drift, keys: list[str], track: str | None) -> str:
    lines = []
    if drift.changed:
        from features_store.fingerprint import media_keys

        lines += [f"{st.path}: the media of {_some(drift.changed)} changed since their features were computed "
                  "(size or modification time differ from what the store recorded), so the stored features are stale",
                  f"  refresh: {fill_command(st, media_keys(st, keys), track)}",
                  "  (it recomputes the items whose content changed and records the new times of files only "
                  "touched), then run this again"]
    if drift.missing:
        lines += [f"{st.path}: the media of {_some(drift.missing)} are missing (their features were computed "
                  "from these files): restore them"]
    lines.append("  (--skip-media-check reads the stored features without comparing them with the media, e.g. a "
                 "store copied without its dataset)")
    return "\n".join(lines)


def _some(ids: list[str]) -> str:
    """'3 item(s) (a, b, c)': the count and the first few ids."""
    more = f" and {len(ids) - SHOW_ITEMS} more" if len(ids) > SHOW_ITEMS else ""
    return f"{len(ids)} item(s) ({', '.join(ids[:SHOW_ITEMS])}{more})"


def incomplete_message(st, issues: list[dict], track: str | None, what: str) -> str:
    lines = [f"{st.path}: split {issues[0]['split']!r} is incomplete, so {what} would be on a subset:"]
    for i in issues:
        lines.append(f"  - {i['key']}: {i['done']} of {i['items']} items done, {i['pending']} pending, "
                     f"{i['failed']} failed (e.g. {', '.join(i['examples'])})")
        lines.append(f"    fill: {fill_command(st, i['key'], track)}")
        if i["failed"]:
            lines.append(f"    why failed: python -m features_store errors {shlex.quote(str(st.path))} {i['key']}")
    return "\n".join(lines)


def load_track(store_path, extractors, split: str | None = "train", target: str | None = "mos",
               allow_incomplete: bool = False, vocabularies: dict[str, list[str]] | None = None,
               track: str | None = None, what: str = "the result") -> TrackData:
    """X (blocks side by side, in the order given), y, ids, groups, generators and the block map.

    A split whose items are not all done for every key is refused (IncompleteFeaturesError naming the
    key, the counts and the command that fills it) unless ``allow_incomplete``: then the done subset is
    read and ``TrackData.incomplete`` says what was left out. ``vocabularies`` ({store key: generator
    names}) maps a ``generator`` block onto a model's vocabulary (see extractors.generator).
    """
    from extractors.generator import remap_onehot, vocabulary_from_names
    from features_store import FeatureStore, load_features, resolve_keys

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        keys = resolve_keys(st, extractors if extractors else st.keys())
        issues = completeness(st, keys, split)
        if issues and not allow_incomplete:
            raise IncompleteFeaturesError(incomplete_message(st, issues, track, what) +
                                          "\n  (--allow-incomplete fits and scores the done subset; a submission "
                                          "is never written for an incomplete split)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            X, y, ids, groups = load_features(st, keys, split=split, target=target)
        for w in caught:
            if "not done" not in str(w.message):  # incompleteness is reported above, in full
                print(f"warning: {w.message}")
        names = [st.config(k)["name"] for k in keys]
        block_names = [n if names.count(n) == 1 else k for n, k in zip(names, keys)]
        dims = {b: int(st.config(k)["dim"]) for b, k in zip(block_names, keys)}
        if sum(dims.values()) != X.shape[1]:
            raise RuntimeError(f"store dims {dims} do not add up to the {X.shape[1]} columns read")
        parts, start, vocabs = [], 0, {}
        for b, k, n in zip(block_names, keys, names):
            part = X[:, start:start + dims[b]]
            start += dims[b]
            if n == "generator":
                have = vocabulary_from_names(st.feature_names(k))
                want = (vocabularies or {}).get(k, have)
                if have is None and want is not None:
                    raise ValueError(f"{st.path}: {k} records no generator vocabulary in its feature names; "
                                     "recompute it (`aigcq features ... --extractors generator`)")
                if want is not None:
                    part = remap_onehot(part, have, want)
                    vocabs[b] = list(want)
            parts.append(part)
        X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        start, blocks = 0, {}
        for b, part in zip(block_names, parts):
            blocks[b] = [start, start + part.shape[1]]
            start += part.shape[1]
        df = st.df.set_index("item_id")
        gens = df.loc[list(ids), "generator"].to_numpy(dtype=object) if "generator" in df else np.full(len(ids), None)
        fnames = df.loc[list(ids), "name"].to_numpy(dtype=object) if "name" in df else np.asarray(ids, dtype=object)
    runtime, devices = _runtime_attrs(store_path, keys)
    return TrackData(X=np.asarray(X, dtype=np.float64), y=None if y is None else np.asarray(y, float), ids=ids,
                     groups=groups, generators=gens, names=fnames, blocks=blocks,
                     keys=dict(zip(block_names, keys)), split=split, runtime=runtime, devices=devices,
                     vocabularies=vocabs, incomplete=issues)
