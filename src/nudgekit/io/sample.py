"""The small embedded sample dataset that ships with nudgekit (docs/sample.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """The bundled sample: an embedded dataset directory with its texts under ``texts/``."""
    return Path(str(resources.files("nudgekit") / "_sample"))
