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


def read_yaml(path) -> object:
    """A hand-written YAML file (a dataset description, a recipe), refusing a key written twice in one
    mapping: YAML keeps the last without a word, so a second ``columns:`` line would drop the first."""
    from pathlib import Path

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` repeats keys on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if first != key_node.start_mark.line + 1:
                    raise ValueError(f"{path}: key {key!r} is written twice (line {first} and line "
                                     f"{key_node.start_mark.line + 1}); YAML would keep only the last: merge them "
                                     "into one")
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at offset "
                         f"{err.start}); save it as UTF-8") from None
    except yaml.MarkedYAMLError as err:  # one line: what is wrong, and where
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML: {err.problem or err.context}{where}"
                         + (f" ({err.context} at line {err.context_mark.line + 1})" if err.context and err.context_mark
                            and err.problem else "")) from None
