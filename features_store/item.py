"""One row of a manifest, as an extractor sees it (``Manifest.items()`` makes them).

It lives on the ground floor, beside the manifest that makes it, so that nothing here imports
the extractors above; ``extractors.base`` re-exports it for the extractor contract.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One row of a manifest, as an extractor sees it."""

    index: int  # row in the manifest / store
    item_id: str
    path: str | None  # absolute path of the media file; None when the dataset has no media
    prompt: str = ""
    generator: str | None = None
