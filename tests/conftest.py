"""Shared fixtures: small synthetic retrieval problems with known structure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

# Property tests draw the same examples on every run (here and in CI): a failure is then
# reproducible, and a green run stays green. Explore new examples with
# HYPOTHESIS_PROFILE=explore.
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

SHARED_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared/data/scifact/minilm"


@dataclass
class Problem:
    corpus: np.ndarray
    train_q: np.ndarray
    train_rel: list[list[int]]
    val_q: np.ndarray
    val_rel: list[list[int]]
    test_q: np.ndarray
    test_rel: list[list[int]]


def make_problem(
    seed: int = 0,
    n: int = 2000,
    d: int = 24,
    n_answering: int = 300,
    n_train: int = 300,
    n_val: int = 80,
    n_test: int = 80,
    noise: float = 0.9,
    max_relevant: int = 3,
    eval_max_relevant: int | None = None,
    shift: float = 0.0,
) -> Problem:
    """Records 0..n_answering-1 answer queries (1..max_relevant each); the rest never do.

    Queries are noisy copies of the mean of their relevant records, so fine-tuning on
    training queries helps validation and test queries that share answers. ``shift``
    moves the queries of each answering record off it, along a direction of its own (the
    gap between how documents and questions are phrased, which NUDGE closes): with it,
    validation picks γ > 0.
    """
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(n, d)).astype(np.float32)
    unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    if shift:
        offset = rng.normal(size=(n, d))
        target = unit + shift * offset / np.linalg.norm(offset, axis=1, keepdims=True)
        unit = target / np.linalg.norm(target, axis=1, keepdims=True)

    def queries(count: int, most: int) -> tuple[np.ndarray, list[list[int]]]:
        rel = [
            sorted(
                int(i)
                for i in rng.choice(n_answering, size=rng.integers(1, most + 1), replace=False)
            )
            for _ in range(count)
        ]
        q = np.stack([unit[r].mean(axis=0) for r in rel])
        q = q / np.linalg.norm(q, axis=1, keepdims=True) + noise * rng.normal(
            size=q.shape
        ) / np.sqrt(d)
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), rel

    eval_most = max_relevant if eval_max_relevant is None else eval_max_relevant
    train_q, train_rel = queries(n_train, max_relevant)
    val_q, val_rel = queries(n_val, eval_most)
    test_q, test_rel = queries(n_test, eval_most)
    return Problem(corpus, train_q, train_rel, val_q, val_rel, test_q, test_rel)


def problems(*, max_n: int, max_d: int, max_train: int, max_val: int) -> st.SearchStrategy:
    """Random small problems for the property tests (sizes capped per test module)."""
    return st.builds(
        make_problem,
        seed=st.integers(0, 10_000),
        n=st.integers(40, max_n),
        d=st.integers(3, max_d),
        n_answering=st.integers(5, 40),
        n_train=st.integers(1, max_train),
        n_val=st.integers(1, max_val),
        n_test=st.just(1),
        noise=st.floats(0.1, 2.0),
    )


def normalised(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, float32 (what NUDGE starts from)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def problem() -> Problem:
    return make_problem()


@pytest.fixture
def scifact_dir() -> Path:
    if not (SHARED_SCIFACT / "corpus.npy").exists():
        pytest.skip("shared SciFact data not present (../shared/data/scifact/minilm)")
    return SHARED_SCIFACT
