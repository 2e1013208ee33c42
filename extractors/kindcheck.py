"""Media kind vs track: refuse a dataset of videos on the image track (and the reverse) up front.

Before, videos on ``TRACK=image`` were silently reduced to frame 0 and images on
``TRACK=video`` became 1-frame videos. The adapter's own knowledge comes first (FETV and
T2VQA-DB hold videos, AIGIQA-20K images; a YAML table may say ``media: video``); otherwise a
few media files spread over the dataset are recognised by content (headers only, about a
millisecond each). Files of the other kind in a mixed dataset fail one by one, each with
the reason (see ``extractors.media.load_image`` / ``read_video_frames``).
"""
from __future__ import annotations

import os

from .base import ItemError
from .media import MISMATCH_HINT, media_kind

#: media files recognised by content before a run (spread evenly over the items)
SAMPLE = 12

_READ_AS = {"image": "take frame 0 of each video", "video": "read each image as a 1-frame video"}


def check_media_kind(manifest, track: str, allow: bool = False, sample: int = SAMPLE) -> list[str]:
    """Raise ValueError when the dataset holds the other kind of media than ``track``; return notes
    (a mixed dataset, or a mismatch allowed on request) for the caller to print."""
    other = "video" if track == "image" else "image"
    fix = f"use TRACK={other} (--track {other}), or pass {MISMATCH_HINT} to {_READ_AS[track]}"
    if manifest.media and manifest.media != track:
        if allow:
            return [f"dataset {manifest.name!r} holds {manifest.media}s on the {track} track: {_READ_AS[track]} "
                    "(--allow-media-mismatch)"]
        raise ValueError(f"dataset {manifest.name!r} ({manifest.adapter or 'table'}) holds {manifest.media}s but the "
                         f"track is {track}: {fix}")
    kinds = sampled_kinds(manifest, sample)
    if not kinds:
        return []
    wrong = [p for p, k in kinds if k == other]
    if not wrong:
        return []
    examples = ", ".join(os.path.basename(p) for p in wrong[:3])
    if allow:
        return [f"{len(wrong)} of {len(kinds)} sampled media files are {other}s on the {track} track (e.g. "
                f"{examples}): {_READ_AS[track]} (--allow-media-mismatch)"]
    if len(wrong) == len(kinds):
        raise ValueError(f"dataset {manifest.name!r}: {len(wrong)} of {len(kinds)} sampled media files are {other}s "
                         f"(by content, e.g. {examples}) but the track is {track}: {fix}")
    return [f"{len(wrong)} of {len(kinds)} sampled media files are {other}s on the {track} track (e.g. {examples}): "
            f"each such item fails with the reason; {fix}"]


def sampled_kinds(manifest, sample: int = SAMPLE) -> list[tuple[str, str]]:
    """(path, 'image'|'video') of up to ``sample`` existing media files spread over the manifest."""
    paths = [p for p in manifest.df["path"].tolist() if p]
    if not paths:
        return []
    step = max(1, len(paths) // sample)
    out = []
    for rel in paths[::step][:sample]:
        path = manifest.abspath(rel)
        if not os.path.isfile(path):
            continue
        try:
            out.append((path, media_kind(path)))
        except ItemError:  # broken or unknown files fail later, by name
            continue
    return out
