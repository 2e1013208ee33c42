"""The extractor contract.

An extractor turns one item (media path + prompt + generator) into one float32
vector. The runner (``extractors.runner``) drives every extractor the same way:

    ex = get_extractor("clip", model="ViT-L-14")      # __init__ only stores options
    ex.setup(device="cuda", precision="bf16")          # loads weights, main process
    prepared = ex.prepare(item)                        # DataLoader worker: decode + preprocess
    batch = ex.collate([prepared, ...])                # DataLoader worker
    rows = ex.compute(batch, items)                    # main process: [B, D] float32

``prepare`` raises :class:`ItemError` for a bad item (unreadable file, zero frames,
...); the runner stores the reason for that item and goes on.

The store key of an extractor is its name plus a hash of :meth:`Extractor.identity`,
which must contain everything that changes the numbers: options (weights id and
revision, input size, frame sampling, ...), the resolved precision, our own code
version and the major.minor versions of the libraries that compute them.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from typing import Any, ClassVar, Sequence

import numpy as np

from features_store.hints import suggest  # one copy, in the lowest room (registry, recipes, aigcq import it from here)
from features_store.item import Item  # the manifest makes items (ground floor); extractors import it from here

KINDS = ("image", "video", "text", "meta")
PRECISIONS = ("fp32", "fp16", "bf16")


class ItemError(Exception):
    """A failure confined to one item; the message says why (it is stored verbatim)."""


class WeightsNotFoundError(RuntimeError):
    """Weights are absent (offline, or a local path that does not exist).

    The message must name the missing file or hub id and say how to provide it.
    """


def _check_option_type(extractor: str, key: str, value: Any, default: Any) -> None:
    """Refuse a value of the wrong kind at once (``size=abc`` would otherwise fail deep inside
    setup as "invalid literal for int()"). Only clear cases: a number or a flag expected, text
    given. ``None`` stays allowed (several numeric options take None for "off")."""
    if value is None or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"extractor {extractor!r}: option {key}={value!r} must be true or false "
                             f"(default {str(default).lower()})")
    elif isinstance(default, (int, float)) and (isinstance(value, (str, bytes, list, dict)) or isinstance(value, bool)):
        what = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"extractor {extractor!r}: option {key}={value!r} must be {what} (default {default}), "
                         f"e.g. {extractor}:{key}={default}")


def library_versions(packages: Sequence[str]) -> dict[str, str]:
    """major.minor of each installed package (patch releases do not change numbers)."""
    out = {}
    for pkg in packages:
        try:
            v = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v = "absent"
        out[pkg] = ".".join(v.split("+")[0].split(".")[:2])
    return out


_FILE_DIGESTS: dict[tuple, str] = {}


def file_identity(path: str) -> dict[str, Any]:
    """A weights file as an identity records it: its name and sha256 (None when it does not exist yet; setup
    then fails naming the path). Digests are cached by (real path, size, mtime): identity() is called often."""
    import os

    p = os.path.expanduser(str(path))
    try:
        st = os.stat(p)
    except OSError:
        return {"file": os.path.basename(p), "sha256": None}
    if os.path.isdir(p):  # an extractor that takes a folder resolves the file first (reiqa); else its name only
        return {"folder": os.path.basename(p.rstrip(os.sep)), "sha256": None}
    cache_key = (os.path.realpath(p), st.st_size, st.st_mtime_ns)
    if cache_key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_DIGESTS[cache_key] = h.hexdigest()
    return {"file": os.path.basename(p), "sha256": _FILE_DIGESTS[cache_key]}


def config_hash(identity: dict) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class Extractor:
    """Base class. Subclasses set the class attributes and implement prepare/compute."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "image"
    #: bump when our implementation changes the numbers it produces
    version: ClassVar[str] = "1"
    #: every option with its default; unknown options are refused
    defaults: ClassVar[dict[str, Any]] = {}
    #: distributions whose major.minor enter the store key
    packages: ClassVar[tuple[str, ...]] = ("numpy",)
    #: human-readable install hint shown by `python -m extractors list`
    needs: ClassVar[str] = "core"
    #: one line for `python -m extractors list`
    summary: ClassVar[str] = ""
    #: whether the prompt changes the numbers (a cache keyed by file content must then include it)
    uses_prompt: ClassVar[bool] = True
    #: options whose value is not plain data (audited in docs/security.md): ``"path"`` names a local file (the
    #: identity records its content, :func:`file_identity`, never the path); ``"weights"`` names hub weights by id
    #: (a local folder only when the user gives it); ``"filename"`` a file inside those weights; ``"revision"`` a hub
    #: revision (from a bundle a plain ref name only); ``"code"`` lets a file run code when it is loaded (it changes no
    #: number, so it stays out of the identity). A bundle never supplies a path or code (extractors.bundle_options).
    local_options: ClassVar[dict[str, str]] = {}
    #: values of a ``"path"`` option that are names, not paths (raft_motion's ``weights="default"``)
    path_keywords: ClassVar[tuple[str, ...]] = ()
    #: read media of the other kind anyway (a video's frame 0 on the image track, an image as a
    #: 1-frame video): off by default, set by the runner on request (--allow-media-mismatch). Not
    #: an option: an item's numbers are the same whenever it is computed, only refusals change.
    allow_media_mismatch: bool = False

    def __init__(self, **options: Any) -> None:
        unknown = [k for k in options if k not in self.defaults]
        if unknown:
            raise ValueError(
                f"extractor {self.name!r} has no option {unknown[0]!r}."
                f"{suggest(unknown[0], list(self.defaults))} Options: {sorted(self.defaults)}"
            )
        for k, v in options.items():
            _check_option_type(self.name, k, v, self.defaults[k])
        self.options: dict[str, Any] = {**self.defaults, **options}
        self.device = "cpu"
        self.precision = "fp32"

    # ----------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        """Everything that changes the numbers. Subclasses may extend it."""
        return {
            "name": self.name,
            "version": self.version,
            "options": self.identity_options(),
            "precision": self.precision,
            "libraries": library_versions(self.packages),
        }

    def identity_options(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """``options`` (default: this extractor's) as they enter the identity: a local file by its content
        (:func:`file_identity`), not its path, so the same weights give the same key on any machine; options that
        only allow code to run left out (they change no number)."""
        out = dict(self.options if options is None else options)
        for k, kind in self.local_options.items():
            if kind == "code":
                out.pop(k, None)
            elif kind == "path" and isinstance(out.get(k), str) and out[k] and out[k] not in self.path_keywords:
                out[k] = file_identity(out[k])
        return out

    def key(self) -> str:
        """Store key: name plus a hash of the identity (readable, and unique per configuration)."""
        return f"{self.name}-{config_hash(self.identity())}"

    @classmethod
    def options_from_identity(cls, identity: dict[str, Any]) -> dict[str, Any]:
        """The options that rebuild this configuration from a recorded identity.

        A model bundle records each feature block's identity; scoring new media rebuilds
        the extractor from it (``get_extractor({"name": ..., **options})``) and checks
        that the rebuilt key equals the recorded one. Subclasses whose identity does not
        hold their options under ``"options"`` override this.
        """
        return cls.strip_file_identities(dict(identity.get("options", {})))

    @classmethod
    def strip_file_identities(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A local file recorded by its content cannot be rebuilt from the record: the option is left unset (the
        user names the file; its content must then match for the key to match)."""
        for k, kind in cls.local_options.items():
            if kind == "path" and isinstance(options.get(k), dict):
                options[k] = None
        return options

    def output_dim(self) -> int | None:
        """Vector length if known without loading weights, else None (the store learns it)."""
        return None

    def feature_names(self, dim: int) -> list[str]:
        return [f"{self.name}_{i}" for i in range(dim)]

    # ---------------------------------------------------------------- lifecycle
    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        """Load weights onto ``device``. Called once, in the main process, before compute.

        ``precision`` is the *resolved* precision (fp32/fp16/bf16); extractors that run
        with autocast use it. It enters :meth:`identity`, so set it before :meth:`key`.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = device
        self.precision = precision

    def prepare(self, item: Item) -> Any:
        """Worker-side: read and preprocess one item. Raise ItemError for a bad item."""
        raise NotImplementedError

    def collate(self, prepared: list[Any]) -> Any:
        """Worker-side: combine prepared items into a batch (default: stack tensors)."""
        import torch

        if prepared and isinstance(prepared[0], torch.Tensor):
            return torch.stack(prepared)
        if prepared and isinstance(prepared[0], np.ndarray):
            return np.stack(prepared)
        return list(prepared)

    def compute(self, batch: Any, items: list[Item]) -> np.ndarray:
        """Main process: return float32 [len(items), D]."""
        raise NotImplementedError

    def __repr__(self) -> str:  # readable in notebooks and logs
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def autocast_context(device: str, precision: str):
    """torch autocast for fp16/bf16 on GPU; a no-op for fp32 (and always on CPU fp32)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=dtype)


def resolve_precision(precision: str, device: str) -> str:
    """'auto' means bf16 (fp16 where bf16 is unsupported) on GPU and fp32 on CPU."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {precision!r}")
        return precision
    if not str(device).startswith("cuda"):
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
