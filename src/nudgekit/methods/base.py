"""The common interface of every fine-tuning method that ``nudgekit bench`` compares.

A method gets a :class:`Task` (corpus embeddings, train/val splits, optionally the texts
and model behind them) and returns a :class:`Fitted`: the record embeddings to search
and how to put a split's queries into the same space. Methods are listed, with their
traits, in :mod:`nudgekit.methods.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nudgekit.io.dataset import Split


@dataclass(frozen=True)
class Texts:
    """What a method that re-embeds needs: the BEIR directory and the model."""

    beir_dir: Path
    model: str  # a sentence-transformers name, a local path or a nudgekit model alias


@dataclass(frozen=True)
class Task:
    """The inputs every method gets."""

    corpus: np.ndarray  # N × d record embeddings (may be a read-only memory map)
    corpus_ids: list[str]
    train: Split
    val: Split
    texts: Texts | None = None
    device: str | None = None


@dataclass
class Fitted:
    """What a method learned, ready to be searched by inner product."""

    corpus: np.ndarray  # N × d record embeddings in the method's space
    encode: Callable[[Split], np.ndarray]  # a split's query embeddings in that space
    gamma: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


def raw_queries(split: Split) -> np.ndarray:
    """The split's query embeddings as they are (methods that only move records)."""
    return split.queries


class Method(ABC):
    """A fine-tuning method. Constructor stores parameters; :meth:`fit` does the work."""

    name: ClassVar[str]

    @abstractmethod
    def fit(self, task: Task) -> Fitted:
        """Fine-tune on ``task.train`` (selecting on ``task.val``)."""
