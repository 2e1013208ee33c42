"""Where weights come from: a local path or a Hugging Face hub id (+ revision).

Every model extractor goes through :func:`resolve_pretrained` / :func:`resolve_file`
so that offline behaviour is the same everywhere:

* a local directory or file is used as is (nothing is contacted);
* a hub id is looked up in the local cache first; with ``HF_HUB_OFFLINE=1`` (or no
  network) a missing file raises :class:`WeightsNotFoundError` naming the id, the
  revision and the file, and how to provide it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .base import WeightsNotFoundError

#: set while extractors named by a model bundle are built and run: hub weights come from the local cache only
_CACHE_ONLY: ContextVar[bool] = ContextVar("aigcq_weights_cache_only", default=False)


@contextmanager
def cache_only():
    """Weights named by a model bundle are resolved from the user's own cache: nothing is downloaded (a bundle
    never makes the toolkit fetch anything; a missing file is refused naming the id, the revision and how to get it)."""
    token = _CACHE_ONLY.set(True)
    try:
        yield
    finally:
        _CACHE_ONLY.reset(token)


def hub_offline() -> bool:
    return _CACHE_ONLY.get() or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def is_local(source: str) -> bool:
    return os.path.exists(os.path.expanduser(str(source)))


def _how_to(source: str, revision: str | None, filename: str | None) -> str:
    what = f"{source}" + (f"@{revision}" if revision else "") + (f" file {filename!r}" if filename else "")
    return (
        f"weights not found: {what}. "
        + ("The weights a model bundle names come from your local cache only, so nothing was downloaded. "
           if _CACHE_ONLY.get() else "HF_HUB_OFFLINE is set, so nothing was downloaded. " if hub_offline() else "") +
        "Download them on a machine with access (`huggingface-cli download "
        f"{source}{' --revision ' + revision if revision else ''}`) and copy the hub cache, "
        "or pass a local path to the option that names the weights."
    )


def resolve_pretrained(source: str, revision: str | None = None) -> str:
    """Return something ``from_pretrained`` can load without surprises.

    Local paths are returned expanded. For hub ids we check that the snapshot is
    reachable (cache or network) up front, so the error is ours and names the id.
    """
    if is_local(source):
        return os.path.expanduser(str(source))
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            repo_id=source,
            revision=revision,
            local_files_only=hub_offline(),
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.bin", "*.py", "*.pt"],
        )
    except Exception as err:  # offline, unknown id, no network
        raise WeightsNotFoundError(_how_to(source, revision, None) + f" ({type(err).__name__}: {err})") from err


def resolve_file(source: str, filename: str, revision: str | None = None) -> str:
    """One file from a local directory or a hub repo (e.g. ImageReward.pt)."""
    if is_local(source):
        p = Path(os.path.expanduser(str(source)))
        path = p / filename if p.is_dir() else p
        if not path.exists():
            raise WeightsNotFoundError(f"weights not found: {path} does not exist")
        return str(path)
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(source, filename, revision=revision, local_files_only=hub_offline())
    except Exception as err:
        raise WeightsNotFoundError(_how_to(source, revision, filename) + f" ({type(err).__name__}: {err})") from err


def load_state_exactly(net, state: dict, what: str, shown: int = 6):
    """``net.load_state_dict(state)``, refusing any missing or unexpected key with a readable list.

    torch's own strict error dumps every key; for a 1,000-tensor checkpoint that buries the
    reason. ``what`` says which file and which architecture did not fit.
    """
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        def head(keys):
            return f"{keys[:shown]}{'...' if len(keys) > shown else ''}"

        raise ValueError(f"{what}: missing {head(missing)}; unexpected {head(unexpected)}")
    return net
