"""" Did you mean ...?" hints for misspelt names: adapters, options, columns, extractors, store keys, jobs.

Kept in the lowest room so that every other one (extractors, experiments, aigcq) imports this one copy.
"""
from __future__ import annotations

import difflib
from typing import Iterable


def suggest(name: str, choices: Iterable) -> str:
    """" Did you mean ...?" for a misspelt name (empty when nothing is close). Case is no evidence:
    'MSO' is close to 'mos'; the choices are shown as spelt."""
    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
