"""Invariants of the NUDGE math, checked on random problems (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nudgekit import NudgeM, NudgeN, Relevance
from nudgekit.core import get_backend, nudge_m, nudge_n, row_norms
from nudgekit.core.query_sums import query_sums

from .conftest import make_problem, normalised
from .conftest import problems as shared_problems

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

problems = shared_problems(max_n=400, max_d=16, max_train=60, max_val=30)


@SETTINGS
@given(p=problems, gamma=st.floats(0.0, 4.0))
def test_nudge_n_rows_stay_unit_norm(p, gamma):
    out = NudgeN(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel).transform(p.corpus)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@SETTINGS
@given(p=problems, gamma=st.floats(0.0, 4.0))
def test_nudge_n_moves_each_record_at_most_sqrt_gamma(p, gamma):
    out = NudgeN(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel).transform(p.corpus)
    moved = np.sum((out - normalised(p.corpus)) ** 2, axis=1)
    assert np.all(moved <= gamma + 1e-5)


@SETTINGS
@given(p=problems, gamma=st.floats(0.0, 4.0), method=st.sampled_from([NudgeN, NudgeM]))
def test_rows_no_training_query_names_are_untouched(p, gamma, method):
    model = method(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel)
    out = model.transform(p.corpus)
    named = np.unique([i for rel in p.train_rel for i in rel])
    assert np.isin(model.changed_rows_, named).all()
    untouched = np.setdiff1d(np.arange(len(p.corpus)), model.changed_rows_)
    np.testing.assert_allclose(out[untouched], normalised(p.corpus)[untouched], rtol=0, atol=1e-6)


@SETTINGS
@given(p=problems, method=st.sampled_from([NudgeN, NudgeM]))
def test_gamma_zero_is_the_identity(p, method):
    model = method(gamma=0.0).fit(p.corpus, p.train_q, p.train_rel)
    assert model.n_changed_ == 0
    np.testing.assert_allclose(model.transform(p.corpus), normalised(p.corpus), rtol=0, atol=1e-6)


@SETTINGS
@given(p=problems, gamma=st.floats(0.0, 2.0))
def test_nudge_m_moves_by_gamma_along_the_normalised_query_sum(p, gamma):
    model = NudgeM(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel)
    g = np.zeros_like(p.corpus, dtype=np.float64)
    for q, rel in zip(p.train_q, p.train_rel, strict=True):
        g[rel] += q
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    expected = normalised(p.corpus) + gamma * np.divide(g, norms, where=norms > 0, out=g * 0)
    np.testing.assert_allclose(model.transform(p.corpus), expected, atol=1e-5)


@SETTINGS
@given(seed=st.integers(0, 10_000), d=st.integers(2, 12), gamma=st.floats(0.001, 3.9))
def test_nudge_n_closed_form_beats_every_feasible_point(seed, d, gamma):
    """X̂ maximises c·x over unit x with ‖x − v‖² ≤ γ: no feasible sample does better."""
    rng = np.random.default_rng(seed)
    v = normalised(rng.normal(size=(1, d)))
    c = rng.normal(size=(1, d)).astype(np.float32)
    c += 2.0 * abs((v @ c.T).item()) * v  # v·c ≥ 0, so the record may move
    geometry = nudge_n.MoveGeometry.of(v, c)
    best = nudge_n.apply_update(v, c, geometry, gamma)[0].astype(np.float64)
    assert float(best @ c[0]) >= float(v[0] @ c[0]) - 1e-6
    # feasible points: v rotated towards random directions by chords up to √γ
    u = rng.normal(size=(2000, d))
    u -= (u @ v[0])[:, None] * v[0]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    chord = np.sqrt(gamma) * rng.uniform(0, 1, size=(2000, 1))
    theta = 2 * np.arcsin(np.minimum(chord / 2, 1.0))
    x = np.cos(theta) * v[0] + np.sin(theta) * u
    assert np.all(x @ c[0] <= best @ c[0] + 1e-5)


def _top1_accuracy(p, embeddings, rtol=1e-5):
    """Top-1 accuracy, ties counted as correct up to float32 rounding of the scores.

    γ* sits exactly where a relevant record ties its best competitor, and NUDGE-M scores
    grow with γ, so the tie is only exact up to a tolerance relative to the scores.
    """
    scores = p.val_q @ embeddings.T
    best = scores.max(axis=1)
    tol = rtol * np.maximum(1.0, np.abs(best))
    return np.mean([scores[j, rel].max() >= best[j] - tol[j] for j, rel in enumerate(p.val_rel)])


@SETTINGS
@given(p=problems)
@example(  # γ* ≈ 40: scores ≈ 40, the tie at γ* holds only up to float32 rounding
    p=make_problem(seed=320, n=159, d=4, n_answering=14, n_train=29, n_val=21, n_test=1, noise=1.0)
)
def test_nudge_m_gamma_attains_the_brute_force_maximum(p):
    model = NudgeM().fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    chosen = _top1_accuracy(p, model.transform(p.corpus))
    top = max(4 * model.gamma_, 2.0)
    for gamma in np.linspace(0, top, 201):
        grid = NudgeM(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel).transform(p.corpus)
        assert chosen >= _top1_accuracy(p, grid) - 1e-9


def _topk_accuracy(p, embeddings, k):
    scores = p.val_q @ embeddings.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.mean(
        [len(set(t) & set(rel)) / min(len(rel), k) for t, rel in zip(top, p.val_rel, strict=True)]
    )


@SETTINGS
@given(p=problems, val_k=st.integers(1, 5))
def test_nudge_n_curve_is_the_brute_force_accuracy_and_gamma_its_first_maximum(p, val_k):
    model = NudgeN(val_k=val_k).fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    curve = model.validation_curve_
    for gamma, accuracy in zip(curve["gamma"], curve["accuracy"], strict=True):
        out = NudgeN(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel).transform(p.corpus)
        assert accuracy == pytest.approx(_topk_accuracy(p, out, val_k), abs=1e-9)
    assert model.gamma_ == curve["gamma"][int(np.argmax(curve["accuracy"]))]


@SETTINGS
@given(p=problems, block=st.integers(1, 50))
def test_query_sums_is_the_sum_of_each_records_training_queries(p, block):
    rows, g = query_sums(
        p.train_q, Relevance.from_lists(p.train_rel, len(p.corpus)), block_records=block
    )
    dense = np.zeros((len(p.corpus), p.train_q.shape[1]))
    for j, relevant in enumerate(p.train_rel):
        dense[np.unique(relevant)] += p.train_q[j]
    np.testing.assert_array_equal(rows, np.flatnonzero(np.any(dense != 0, axis=1)))
    np.testing.assert_allclose(g, dense[rows], rtol=1e-6, atol=1e-6)


def _dense_winning_intervals(queries, v, g_hat, fixed_best, relevance):
    """NUDGE-M's intervals straight from the definition: every pair against every record."""
    out = []
    for j in range(relevance.n_queries):
        for y in relevance.indices[relevance.indptr[j] : relevance.indptr[j + 1]]:
            s, t = v @ queries[j], g_hat @ queries[j]
            s = np.r_[s, fixed_best[j]].astype(np.float32)
            t = np.r_[t, 0.0].astype(np.float32)
            slope, gap = t[y] - t, s - s[y]
            if np.any((slope == 0) & (gap > 0)):
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = gap / slope
            lower = max(0.0, float(np.max(ratio[slope > 0], initial=-np.inf)))
            upper = float(np.min(ratio[slope < 0], initial=np.inf))
            if upper >= lower:
                out.append((j, lower, upper))
    return out


@SETTINGS
@given(p=problems, block=st.integers(1, 200), copies=st.integers(0, 3))
def test_nudge_m_intervals_match_the_definition(p, block, copies):
    # duplicated records (equal slopes and scores) and records that never move (Ĝ = 0,
    # slope 0 against the fixed competitor) are the edge cases of the sparse reduction
    rel = Relevance.from_lists(p.val_rel, len(p.corpus))
    rows = np.unique(np.r_[rel.indices, np.arange(copies)])
    v = normalised(p.corpus[rows])
    g = normalised(v + np.roll(v, 1, axis=0))
    g[: copies + 1] = g[0]  # equal slopes, different scores
    if copies and len(rows) > copies + 1:
        v[copies + 1], g[copies + 1] = v[0], g[0]  # a record and its exact copy
    g[-1] = 0.0
    local = Relevance(rel.indptr, np.searchsorted(rows, rel.indices), rel.grades, len(rows))
    fixed = np.full(len(p.val_q), 0.1, dtype=np.float32)
    query, lower, upper = nudge_m.winning_intervals(
        get_backend(None), p.val_q, v, g, fixed, local, block_elements=block
    )
    expected = _dense_winning_intervals(p.val_q, v, g, fixed, local)
    # the products are summed in another order here: equal up to float32 rounding
    assert query.tolist() == [j for j, _, _ in expected]
    np.testing.assert_allclose(lower, [lo for _, lo, _ in expected], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(upper, [up for _, _, up in expected], rtol=1e-3, atol=1e-6)


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    d=st.integers(1, 400),
    scale=st.sampled_from([1e-25, 1e-18, 1e-3, 1.0, 1e3, 1e18, 1e25]),
)
def test_row_norms_are_float64_norms_up_to_float32_rounding(seed, d, scale):
    # float32 sums, with tiny and huge rows (whose squares leave float32's range) redone
    x = (np.random.default_rng(seed).normal(size=(20, d)) * scale).astype(np.float32)
    x[3] = 0.0
    expected = np.linalg.norm(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(row_norms(x), expected, rtol=1e-5)
    assert row_norms(x)[3] == 0.0
    x[5, 0] = np.nan
    assert np.isnan(row_norms(x)[5])


@settings(SETTINGS, max_examples=80)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 40),
    k=st.integers(1, 12),
    columns=st.one_of(st.integers(1, 2_047), st.integers(2_048, 6_000)),
    kind=st.sampled_from(["normal", "ties", "minus_inf", "rising"]),
    start=st.sampled_from(["empty", "normal", "high"]),
)
def test_merge_top_k_values_keeps_the_k_largest_of_both(seed, rows, k, columns, kind, start):
    # the strided-group shortcut must give exactly the partition's values, ties and -inf
    # included; it is taken with 2,048+ columns when few groups beat the k-th best ("high")
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(rows, columns)).astype(np.float32)
    if kind == "ties":
        scores = np.floor(scores * 2)
    elif kind == "minus_inf":
        scores[rng.random(scores.shape) < 0.3] = -np.inf
    elif kind == "rising":  # late columns win: many groups gain in every block
        scores += np.linspace(0, 3, columns, dtype=np.float32)
    best = {
        "empty": np.full((rows, k), -np.inf, np.float32),
        "normal": rng.normal(size=(rows, k)).astype(np.float32),
        "high": rng.normal(2.5, 0.3, size=(rows, k)).astype(np.float32),
    }[start]
    xp = get_backend(None)
    expected = np.sort(xp.top_k_values(np.concatenate([best, scores], axis=1), k), axis=1)
    got = np.sort(xp.merge_top_k_values(best, scores), axis=1)
    np.testing.assert_array_equal(got, expected)
    # with a floor (the pass's k-th best so far, ``best`` here): folding the block's result
    # into the running top k gives what folding in every score would
    empty = np.full_like(best, -np.inf)
    block = xp.merge_top_k_values(empty, scores, best.min(axis=1))
    folded = np.sort(xp.top_k_values(np.concatenate([best, block], axis=1), k), axis=1)
    np.testing.assert_array_equal(folded, expected)


@pytest.mark.parametrize("method", [NudgeN, NudgeM])
def test_results_do_not_depend_on_block_sizes(method, problem):
    p = problem
    whole = method().fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    tiny = method(block_rows=7, query_block=5, block_elements=50).fit(
        p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel
    )
    # BLAS sums in a shape-dependent order, so equal up to float32 rounding
    assert tiny.gamma_ == pytest.approx(whole.gamma_, rel=1e-6)
    np.testing.assert_allclose(tiny.transform(p.corpus), whole.transform(p.corpus), atol=1e-6)


@pytest.mark.parametrize("method", [NudgeN, NudgeM])
def test_torch_backend_gives_the_numpy_result(method, problem):
    pytest.importorskip("torch")
    p = problem
    ref = method().fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    got = method(device="torch").fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    assert got.gamma_ == pytest.approx(ref.gamma_, rel=1e-5)
    np.testing.assert_allclose(got.transform(p.corpus), ref.transform(p.corpus), atol=1e-5)


def test_memory_mapped_float16_corpus_gives_the_in_memory_result(problem, tmp_path):
    p = problem
    np.save(tmp_path / "corpus.npy", p.corpus.astype(np.float16))
    mapped = np.load(tmp_path / "corpus.npy", mmap_mode="r")
    in_memory = np.asarray(mapped, dtype=np.float32)
    a = NudgeN().fit(mapped, p.train_q, p.train_rel, p.val_q, p.val_rel)
    b = NudgeN().fit(in_memory, p.train_q, p.train_rel, p.val_q, p.val_rel)
    assert a.gamma_ == b.gamma_
    np.testing.assert_array_equal(a.transform(mapped), b.transform(in_memory))


def test_label_formats_are_equivalent(problem):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    p = problem
    n = len(p.corpus)
    corpus_ids = [f"d{i}" for i in range(n)]
    train_ids = [f"t{j}" for j in range(len(p.train_q))]
    val_ids = [f"v{j}" for j in range(len(p.val_q))]

    def as_sparse(rel):
        rows = np.repeat(np.arange(len(rel)), [len(r) for r in rel])
        cols = np.concatenate([np.asarray(r) for r in rel])
        return scipy_sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(rel), n))

    def as_qrels(rel, ids):
        return {ids[j]: {corpus_ids[i]: 1 for i in r} for j, r in enumerate(rel)}

    lists = NudgeN().fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    sparse = NudgeN().fit(
        p.corpus, p.train_q, as_sparse(p.train_rel), p.val_q, as_sparse(p.val_rel)
    )
    qrels = NudgeN().fit(
        p.corpus,
        p.train_q,
        as_qrels(p.train_rel, train_ids),
        p.val_q,
        as_qrels(p.val_rel, val_ids),
        corpus_ids=corpus_ids,
        train_query_ids=train_ids,
        val_query_ids=val_ids,
    )
    relevance = NudgeN().fit(
        p.corpus,
        p.train_q,
        Relevance.from_lists(p.train_rel, n),
        p.val_q,
        Relevance.from_lists(p.val_rel, n),
    )
    for other in (sparse, qrels, relevance):
        assert other.gamma_ == lists.gamma_
        np.testing.assert_array_equal(other.changed_rows_, lists.changed_rows_)
        np.testing.assert_array_equal(other.changed_embeddings_, lists.changed_embeddings_)


def test_nudge_n_skips_records_whose_queries_point_away():
    """As nudge-ft does: v·G < 0 leaves the record where it is."""
    v = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    q = np.array([[-0.9, 0.3, 0.0]], dtype=np.float32)
    model = NudgeN(gamma=0.3).fit(v, q, [[0]])
    assert model.n_changed_ == 0


def test_nudge_n_stops_at_the_query_direction_when_it_is_within_reach():
    v = np.array([[1.0, 0.0]], dtype=np.float32)
    q = np.array([[0.99, 0.141]], dtype=np.float32)
    out = NudgeN(gamma=0.4).fit(v, q, [[0]]).transform(v)
    np.testing.assert_allclose(out[0], q[0] / np.linalg.norm(q[0]), atol=1e-6)
