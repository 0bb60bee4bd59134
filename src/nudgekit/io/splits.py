"""Query splits: the pooled train/val/test split, and an out-of-distribution split.

**Pooled split** (:func:`pooled_splits`), as used for the SciFact data in ``../shared``:
all queries with at least one relevant document are pooled, sorted by id (string order),
shuffled with ``random.Random(seed)``; then ``val = min(int(0.1·n), 10000)``,
``test = min(int(0.2·n), 10000)`` and ``train`` = the rest, taken from the shuffled list in
the order train, val, test.

**Out-of-distribution split** (:func:`ood_splits`), as in the NUDGE paper: k-means with two
clusters on the *training* query embeddings; validation and test queries go to the nearer
centroid. Fine-tune on cluster 0's train and val queries, then evaluate on cluster 0's test
queries (in-distribution) and on cluster 1's (out-of-distribution). Cluster 0 is the
cluster with more training queries, so fine-tuning sees the larger part.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from nudgekit.core.kmeans import kmeans, nearest_centroid
from nudgekit.io.atomic import write_json
from nudgekit.io.dataset import (
    EmbeddedDataset,
    load_dataset,
    load_matrix,
    read_id_list,
    read_qrels,
)

VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
MAX_SPLIT_SIZE = 10_000
#: The keys of :func:`ood_splits`' result.
OOD_KEYS = ("train_in", "val_in", "test_in", "test_out")


def relevant_query_ids(qrels: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Ids of the queries with at least one relevant document (score > 0), string-sorted."""
    return sorted(str(q) for q, docs in qrels.items() if any(s > 0 for s in docs.values()))


def pooled_splits(query_ids_with_relevant: Iterable[str], seed: int = 0) -> dict[str, list[str]]:
    """Split queries into train / val / test by a seeded shuffle of the sorted pool.

    Parameters
    ----------
    query_ids_with_relevant : iterable of str
        The queries to split (those with a relevant document); order and repeats do not
        matter.
    seed : int
        Seed of the ``random.Random`` that shuffles the pool.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` with ``len(val) =
        min(int(0.1·n), 10000)``, ``len(test) = min(int(0.2·n), 10000)``, train the rest.
        Each list is in shuffled order.
    """
    # string sort, as the reference splits were made (an int sort gives other splits)
    pool = sorted({str(q) for q in query_ids_with_relevant})
    random.Random(seed).shuffle(pool)
    n_train, n_val, _ = _sizes(len(pool))
    return {
        "train": pool[:n_train],
        "val": pool[n_train : n_train + n_val],
        "test": pool[n_train + n_val :],
    }


def _sizes(n: int) -> tuple[int, int, int]:
    # int(0.1 * n), not n // 10: the float product is what the reference splits used
    n_val = min(int(VAL_FRACTION * n), MAX_SPLIT_SIZE)
    n_test = min(int(TEST_FRACTION * n), MAX_SPLIT_SIZE)
    return n - n_val - n_test, n_val, n_test


def time_splits(first_seen: Mapping[str, float]) -> dict[str, list[str]]:
    """Split queries by when they were first seen: the oldest train, then val, the newest
    test (sizes as :func:`pooled_splits`; ties broken by id). What a deployed system
    meets is tomorrow's queries: this split measures that."""
    pool = sorted(first_seen, key=lambda q: (first_seen[q], q))
    n_train, n_val, _ = _sizes(len(pool))
    return {
        "train": pool[:n_train],
        "val": pool[n_train : n_train + n_val],
        "test": pool[n_train + n_val :],
    }


def with_val(splits: Mapping[str, list[str]], seed: int = 0) -> dict[str, list[str]]:
    """``splits`` with a ``val`` split: given ones stay; without one, a seeded tenth of
    ``train`` (at most 10,000) becomes ``val``."""
    out = {k: list(v) for k, v in splits.items()}
    if out.get("val") or not out.get("train"):
        return out
    pool = sorted(out["train"])
    random.Random(seed).shuffle(pool)
    n_val = min(int(VAL_FRACTION * len(pool)), MAX_SPLIT_SIZE)
    out["val"], out["train"] = pool[:n_val], pool[n_val:]
    return out


def ood_splits(
    dataset: EmbeddedDataset | str | os.PathLike[str], seed: int = 0
) -> dict[str, list[str]]:
    """The NUDGE paper's out-of-distribution split of a dataset's train/val/test queries.

    k-means (k = 2, :func:`kmeans` with ``seed``) on the training query embeddings;
    validation and test queries are assigned to the nearer centroid (Euclidean). The
    clusters are numbered so that cluster 0 holds more training queries (on a tie, the
    cluster of the first training query).

    Parameters
    ----------
    dataset : EmbeddedDataset or path
        An embedded dataset (or its directory) with ``train``, ``val`` and ``test`` splits.
    seed : int
        Seed of the k-means++ seeding.

    Returns
    -------
    dict
        ``train_in`` / ``val_in``: cluster 0's training and validation queries (fine-tune
        on these); ``test_in``: cluster 0's test queries (in-distribution); ``test_out``:
        cluster 1's test queries (out-of-distribution). Each list keeps the order of its
        split.
    """
    data = dataset if isinstance(dataset, EmbeddedDataset) else load_dataset(dataset)
    for name in ("train", "val", "test"):
        if name not in data.splits:
            raise ValueError(f"{data.path / 'splits.json'}: no {name!r} split")
    row_of = {q: i for i, q in enumerate(data.query_ids)}

    def embeddings(name: str) -> np.ndarray:
        ids = data.splits[name]
        missing = next((q for q in ids if q not in row_of), None)
        if missing is not None:
            raise ValueError(f"split {name!r}: query id {missing!r} is not in query_ids.json")
        rows = np.fromiter((row_of[q] for q in ids), dtype=np.int64, count=len(ids))
        q = np.asarray(data.queries[rows], dtype=np.float64).reshape(len(ids), data.dim)
        if not np.isfinite(q).all():
            raise ValueError(f"{data.path / 'queries.npy'}: split {name!r} has NaN or inf")
        return q

    train = embeddings("train")
    if len(train) < 2:
        raise ValueError(f"the OOD split needs at least 2 training queries, got {len(train)}")
    centroids, train_labels = kmeans(train, 2, seed=seed)
    sizes = np.bincount(train_labels, minlength=2)
    if sizes[1] > sizes[0] or (sizes[1] == sizes[0] and train_labels[0] == 1):
        centroids, train_labels = centroids[::-1], 1 - train_labels

    def pick(name: str, labels: np.ndarray, cluster: int) -> list[str]:
        return [q for q, c in zip(data.splits[name], labels, strict=True) if c == cluster]

    val_labels = nearest_centroid(embeddings("val"), centroids)
    test_labels = nearest_centroid(embeddings("test"), centroids)
    return {
        "train_in": pick("train", train_labels, 0),
        "val_in": pick("val", val_labels, 0),
        "test_in": pick("test", test_labels, 0),
        "test_out": pick("test", test_labels, 1),
    }


def write_splits(
    dataset_dir: str | os.PathLike[str],
    *,
    ood: bool = False,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
) -> tuple[Path, dict[str, list[str]]]:
    """Recompute a dataset's splits and write them as JSON (atomically).

    Parameters
    ----------
    dataset_dir : path
        An embedded dataset directory.
    ood : bool
        False: :func:`pooled_splits` of the queries with a relevant document in
        ``qrels.json`` (default file ``splits.json``). True: :func:`ood_splits` of the
        dataset's current splits (default file ``ood_splits.json``).
    seed : int
        Shuffle seed (pooled) or k-means seed (OOD).
    out : path, optional
        Where to write instead of the default file in ``dataset_dir``.

    Returns
    -------
    (Path, dict)
        The file written and the splits.
    """
    root = Path(dataset_dir)
    if ood:
        data = load_dataset(root) if (root / "corpus.npy").exists() else _labels(root)
        splits = ood_splits(data, seed=seed)
    else:
        # only the queries' ids and labels are needed: a labels folder, or a dataset
        # without splits.json, works
        query_ids = set(read_query_ids(root))
        pool = relevant_query_ids(read_qrels(root / "qrels.json"))
        missing = next((q for q in pool if q not in query_ids), None)
        if missing is not None:
            raise ValueError(
                f"{root / 'qrels.json'}: query id {missing!r} is not in query_ids.json"
            )
        splits = pooled_splits(pool, seed=seed)
    target = Path(out) if out is not None else root / ("ood_splits.json" if ood else "splits.json")
    if target.is_dir():
        raise ValueError(f"--out {target} is a directory; give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, splits)
    return target, splits


def read_query_ids(root: Path) -> list[str]:
    """``query_ids.json`` of a dataset or labels folder, checked against ``queries.npy``."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    for name in ("query_ids.json", "queries.npy", "qrels.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root}: missing {name}")
    return read_id_list(
        root / "query_ids.json", load_matrix(root / "queries.npy").shape[0], "queries.npy"
    )


def _labels(root: Path) -> EmbeddedDataset:
    """A labels folder as a dataset without corpus (what the OOD split needs)."""
    from nudgekit.io.labels import load_labels

    labels = load_labels(root)
    return EmbeddedDataset(
        root,
        np.zeros((0, labels.dim), np.float32),
        [],
        labels.queries,
        labels.query_ids,
        labels.qrels,
        labels.splits,
        labels.meta,
    )
