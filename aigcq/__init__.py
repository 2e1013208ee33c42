"""aigc-quality as a tool: the ``aigcq`` command and the ``Predictor`` API.

    from aigcq import Predictor
    p = Predictor.load("runs/demo/regress/model")
    p.score(["a.png"], prompts=["a cat on a sofa"])

This package is the highest room: it may import every other one, and nothing imports it.
"""
from __future__ import annotations

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("aigc-quality")
        except metadata.PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
