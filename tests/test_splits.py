"""Pooled train/val/test splits, k-means, the out-of-distribution split, ``nudgekit split``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import nudgekit.cli as cli
import nudgekit.cli._data  # noqa: F401  (registers embed and split until cli/__init__ does)
from nudgekit.io.beir import read_beir
from nudgekit.io.dataset import load_dataset
from nudgekit.io.splits import (
    OOD_KEYS,
    kmeans,
    nearest_centroid,
    ood_splits,
    pooled_splits,
    relevant_query_ids,
    write_splits,
)

SHARED_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared/data/scifact"

ids_strategy = st.lists(st.text(min_size=1, max_size=6), max_size=300)


# --- pooled splits -------------------------------------------------------------------


def test_reproduces_the_shared_scifact_splits():
    if not (SHARED_SCIFACT / "beir/corpus.jsonl").exists():
        pytest.skip("shared SciFact data not present (../shared/data/scifact)")
    beir = read_beir(SHARED_SCIFACT / "beir")
    expected = json.loads((SHARED_SCIFACT / "minilm/splits.json").read_text())
    assert pooled_splits(relevant_query_ids(beir.qrels), seed=0) == expected
    assert {k: len(v) for k, v in expected.items()} == {"train": 778, "val": 110, "test": 221}
    # the merged qrels and the id lists are those of the embedded copy, too
    minilm = SHARED_SCIFACT / "minilm"
    assert beir.qrels == json.loads((minilm / "qrels.json").read_text())
    assert beir.corpus_ids == json.loads((minilm / "corpus_ids.json").read_text())
    assert beir.query_ids == json.loads((minilm / "query_ids.json").read_text())
    # ids sort as strings: sorting them as numbers would give other splits
    by_number = sorted(relevant_query_ids(beir.qrels), key=int)
    random.Random(0).shuffle(by_number)
    assert by_number[: len(expected["train"])] != expected["train"]


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, seed=st.integers(0, 2**32 - 1))
def test_split_sizes_partition_and_order_independence(ids, seed):
    splits = pooled_splits(ids, seed=seed)
    pool = set(ids)
    n = len(pool)
    assert list(splits) == ["train", "val", "test"]
    assert len(splits["val"]) == min(int(0.1 * n), 10_000)
    assert len(splits["test"]) == min(int(0.2 * n), 10_000)
    assert len(splits["train"]) == n - len(splits["val"]) - len(splits["test"])
    together = splits["train"] + splits["val"] + splits["test"]
    assert sorted(together) == sorted(pool)  # a partition: every id once
    # deterministic, and blind to input order and repeats
    assert pooled_splits(list(reversed(ids)) + ids, seed=seed) == splits
    # it is the seeded shuffle of the string-sorted pool, cut train | val | test
    shuffled = sorted(pool)
    random.Random(seed).shuffle(shuffled)
    assert together == shuffled


def test_split_sizes_are_capped():
    splits = pooled_splits((f"q{i}" for i in range(120_000)), seed=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [100_000, 10_000, 10_000]


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(0, (0, 0, 0)), (1, (1, 0, 0)), (5, (4, 0, 1)), (10, (7, 1, 2)), (17, (13, 1, 3))],
)
def test_small_pools(n, sizes):
    splits = pooled_splits([str(i) for i in range(n)])
    assert tuple(len(splits[k]) for k in ("train", "val", "test")) == sizes


def test_seed_changes_the_split():
    ids = [str(i) for i in range(200)]
    assert pooled_splits(ids, seed=0) != pooled_splits(ids, seed=1)


def test_relevant_query_ids_need_a_positive_score():
    qrels = {"10": {"a": 1}, "9": {"b": 0}, "2": {"c": 0, "d": 2}, "1": {}}
    assert relevant_query_ids(qrels) == ["10", "2"]  # string order


# --- k-means ---------------------------------------------------------------------------


def blobs(seed: int = 0, n_a: int = 60, n_b: int = 40, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d)
    a = centre + 0.3 * rng.normal(size=(n_a, d))
    b = -centre + 0.3 * rng.normal(size=(n_b, d))
    x = np.vstack([a, b])
    truth = np.r_[np.zeros(n_a, int), np.ones(n_b, int)]
    order = rng.permutation(len(x))
    return x[order], truth[order]


def test_kmeans_recovers_separated_blobs():
    x, truth = blobs()
    centroids, labels = kmeans(x, 2, seed=0)
    agree = (labels == truth).mean()
    assert agree in (0.0, 1.0)  # the same partition, up to naming
    for j in range(2):
        np.testing.assert_allclose(centroids[j], x[labels == j].mean(axis=0))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 1000),
    n=st.integers(2, 60),
    d=st.integers(1, 6),
    k=st.integers(1, 4),
)
def test_kmeans_is_deterministic_and_converged(seed, n, d, k):
    k = min(k, n)
    x = np.random.default_rng(seed).normal(size=(n, d)).round(1)  # rounding makes ties
    centroids, labels = kmeans(x, k, seed=seed)
    again_c, again_l = kmeans(x.copy(), k, seed=seed)
    np.testing.assert_array_equal(labels, again_l)
    np.testing.assert_array_equal(centroids, again_c)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    assert set(labels.tolist()) <= set(range(k))
    # a fixed point of Lloyd's iteration: nearest centroids, centroids are the means
    np.testing.assert_array_equal(nearest_centroid(x, centroids), labels)
    for j in np.unique(labels):
        np.testing.assert_allclose(centroids[j], x[labels == j].mean(axis=0), atol=1e-12)


def test_kmeans_identical_points_and_bad_input():
    centroids, labels = kmeans(np.ones((5, 3)), 2, seed=0)
    assert labels.tolist() == [0] * 5
    np.testing.assert_array_equal(centroids, np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least k points"):
        kmeans(np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.array([[0.0], [np.nan]]), 2)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(np.zeros(4), 2)


# --- the out-of-distribution split ------------------------------------------------------


def write_blob_dataset(root: Path, seed: int = 0) -> tuple[Path, dict[str, int]]:
    """A dataset whose 100 queries come from two blobs (60 / 40); returns the blob per id."""
    x, truth = blobs(seed, d=8)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    query_ids = [f"q{i:03d}" for i in range(len(x))]
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(30, 8)).astype(np.float32)
    qrels = {q: {f"d{i % 30}": 1} for i, q in enumerate(query_ids)}
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "corpus.npy", corpus)
    np.save(root / "queries.npy", x)
    (root / "corpus_ids.json").write_text(json.dumps([f"d{i}" for i in range(30)]))
    (root / "query_ids.json").write_text(json.dumps(query_ids))
    (root / "qrels.json").write_text(json.dumps(qrels))
    (root / "splits.json").write_text(json.dumps(pooled_splits(query_ids)))
    return root, dict(zip(query_ids, truth.tolist(), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ood_split_follows_the_blobs(tmp_path, seed):
    root, blob = write_blob_dataset(tmp_path / "data", seed)
    data = load_dataset(root)
    ood = ood_splits(data, seed=0)
    assert tuple(ood) == OOD_KEYS
    # cluster 0 is the bigger blob (60 of 100 queries), in every split
    assert all(blob[q] == 0 for q in ood["train_in"] + ood["val_in"] + ood["test_in"])
    assert all(blob[q] == 1 for q in ood["test_out"])
    assert ood["train_in"] == [q for q in data.splits["train"] if blob[q] == 0]
    assert ood["val_in"] == [q for q in data.splits["val"] if blob[q] == 0]
    assert ood_splits(root, seed=0) == ood  # a path works as well, same result


def test_ood_split_partition_properties(tmp_path):
    """On queries with no cluster structure: still a clean, deterministic partition."""
    root = tmp_path / "data"
    write_blob_dataset(root)
    rng = np.random.default_rng(5)
    np.save(root / "queries.npy", rng.normal(size=(100, 8)).astype(np.float32))
    data = load_dataset(root)
    ood = ood_splits(data, seed=0)
    train, val, test = (data.splits[k] for k in ("train", "val", "test"))
    in_order = lambda sub, full: sub == [q for q in full if q in set(sub)]  # noqa: E731
    assert set(ood["train_in"]) <= set(train) and in_order(ood["train_in"], train)
    assert set(ood["val_in"]) <= set(val) and in_order(ood["val_in"], val)
    assert sorted(ood["test_in"] + ood["test_out"]) == sorted(test)
    assert not set(ood["test_in"]) & set(ood["test_out"])
    assert in_order(ood["test_in"], test) and in_order(ood["test_out"], test)
    # cluster 0 holds at least half of the training queries
    assert 2 * len(ood["train_in"]) >= len(train)
    # validation and test queries went to the nearer of the k-means centroids
    rows = {q: i for i, q in enumerate(data.query_ids)}
    emb = lambda ids: np.asarray(data.queries)[[rows[q] for q in ids]]  # noqa: E731
    centroids, labels = kmeans(emb(train), 2, seed=0)
    zero = labels[train.index(ood["train_in"][0])]  # the k-means label of cluster 0
    for key, ids in (("val_in", val), ("test_in", test)):
        nearest = nearest_centroid(emb(ids), centroids)
        assert ood[key] == [q for q, c in zip(ids, nearest, strict=True) if c == zero]
    assert ood_splits(data, seed=0) == ood
    assert ood_splits(data, seed=1).keys() == ood.keys()


def test_ood_split_errors(tmp_path):
    root, _ = write_blob_dataset(tmp_path / "data")
    (root / "splits.json").write_text(json.dumps({"train": ["q000"], "val": [], "test": []}))
    with pytest.raises(ValueError, match="at least 2 training queries"):
        ood_splits(root)
    (root / "splits.json").write_text(json.dumps({"train": ["q000", "q001"], "test": []}))
    with pytest.raises(ValueError, match="no 'val' split"):
        ood_splits(root)


# --- write_splits and the CLI -------------------------------------------------------------

runner = CliRunner()


def test_write_splits_recomputes_pooled_splits(tmp_path):
    root, _ = write_blob_dataset(tmp_path / "data")
    expected = json.loads((root / "splits.json").read_text())
    (root / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    path, splits = write_splits(root)
    assert path == root / "splits.json" and splits == expected
    assert json.loads(path.read_text()) == expected
    path, other = write_splits(root, seed=4, out=tmp_path / "sub" / "s4.json")
    pool = expected["train"] + expected["val"] + expected["test"]
    assert json.loads(path.read_text()) == other == pooled_splits(pool, seed=4)


def test_write_splits_rejects_qrels_of_unknown_queries(tmp_path):
    root, _ = write_blob_dataset(tmp_path / "data")
    qrels = json.loads((root / "qrels.json").read_text()) | {"ghost": {"d1": 1}}
    (root / "qrels.json").write_text(json.dumps(qrels))
    with pytest.raises(ValueError, match=r"'ghost' is not in query_ids\.json"):
        write_splits(root)


def test_cli_split_and_ood(tmp_path):
    root, _ = write_blob_dataset(tmp_path / "data")
    result = runner.invoke(cli.app, ["split", str(root)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("train 70, val 10, test 20 → ")
    result = runner.invoke(cli.app, ["split", str(root), "--ood"])
    assert result.exit_code == 0, result.stderr
    ood = json.loads((root / "ood_splits.json").read_text())
    assert tuple(ood) == OOD_KEYS
    counts = ", ".join(f"{k} {len(v)}" for k, v in ood.items())
    assert result.stdout.startswith(counts)
    out = tmp_path / "s.json"
    result = runner.invoke(cli.app, ["split", str(root), "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    default = json.loads((root / "splits.json").read_text())
    assert json.loads(out.read_text())["train"] != default["train"]


def test_cli_split_error_is_one_line(tmp_path):
    result = runner.invoke(cli.app, ["split", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: dataset directory") and result.stderr.count("\n") == 1
