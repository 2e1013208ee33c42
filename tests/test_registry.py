"""The registry imports lazily and every declared extractor resolves to a class."""
from __future__ import annotations

import subprocess
import sys

import pytest

from extractors.base import Extractor
from extractors.registry import REGISTRY, extractor_class, parse_spec


def test_asking_for_one_backend_imports_no_other():
    code = (
        "import sys; from extractors.registry import get_extractor; get_extractor('generator');"
        "heavy=[m for m in ('torch','open_clip','transformers','timm','av','cv2','h5py') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_resolves(name):
    cls = extractor_class(name)
    assert issubclass(cls, Extractor) and cls.name == name and cls.kind == REGISTRY[name].kind


def test_parse_spec_values_are_typed():
    assert parse_spec("dinov2:model=facebook/dinov2-large:size=518:flip=true") == (
        "dinov2",
        {"model": "facebook/dinov2-large", "size": 518, "flip": True},
    )
    with pytest.raises(ValueError, match="not key=value"):
        parse_spec("clip:ViT-L-14")
