"""Dataset options on a command line (``--data``, ``--adapter``, ``-O key=value``); imports nothing heavy."""
from __future__ import annotations

from typing import Any


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["columns.mos=mos_quality", "split=train"]`` -> nested dict (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"dataset option {pair!r} is not key=value")
        k, v = pair.split("=", 1)
        node = out
        *parents, last = k.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(v) if v.strip() else ""
    return out


def add_dataset_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder, label file (csv/tsv/xlsx) or YAML description")
    parser.add_argument("--adapter", default=None, help="aigiqa20k | t2vqa_db | fetv | table (default: detected)")
    parser.add_argument(
        "-O", "--data-option", action="append", default=[], metavar="KEY=VALUE",
        help="adapter option, repeatable, e.g. -O columns.mos=mos_quality -O 'generator_regex=^(.+?)_' -O videos=/mnt/v",
    )
