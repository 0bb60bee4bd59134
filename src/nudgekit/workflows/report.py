"""An HTML report of one fit: how γ was chosen, test metrics before/after, which test
queries gained or lost and where the moved records now rank, how far records moved.

:func:`write_report` reads a ``nudgekit fit`` output directory (``fit.json`` +
``embeddings.npy``) and the dataset it was fitted on, and writes ``report.html`` — one
self-contained page with every figure inlined as a base64 PNG, so the single file can be
mailed or attached to a ticket — and the same figures as PNG files beside it.

Figures are drawn with matplotlib (an optional dependency) on the Agg canvas, without
pyplot: no display is needed and no global figure state is touched.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import ArraySource, ProgressCallback, normalised_rows
from nudgekit.evaluation import per_query_ndcg, relevant_ranks, retrieval_metrics
from nudgekit.io.atomic import write_bytes
from nudgekit.io.dataset import EmbeddedDataset, load_dataset, load_matrix
from nudgekit.methods import METHODS
from nudgekit.workflows.evaluate import rank_split

#: The figure files a report may write, in page order.
FIGURES = ("validation_curve.png", "test_metrics.png", "query_changes.png")
#: Rank buckets of the "where relevant records rank" chart (ranks are 1-based; 0 = beyond)
RANK_BUCKETS = (("1", 1, 1), ("2–3", 2, 3), ("4–10", 4, 10), ("11–100", 11, 100))
#: Test queries shown as examples of the largest gains and losses
N_EXAMPLES = 5
_DEPTH = 100
#: Metrics in the before/after bar chart; the table adds map@100.
BAR_METRICS = ("ndcg@10", "recall@10", "r_cap@10", "mrr@10", "accuracy@1")
TABLE_METRICS = (*BAR_METRICS, "map@100")

_DPI = 110
_RAW_COLOUR = "#9aa3ad"
_FIT_COLOUR = "#1f6fb4"
_MARK_COLOUR = "#d9480f"


@dataclass
class Movement:
    """How far the changed records moved.

    Attributes
    ----------
    n_records : int
        Rows compared (the corpus size N).
    rows : int array, shape (n_changed,)
        Corpus rows the fit changed (its ``changed_rows.npy``).
    distance : float64 array, shape (n_changed,)
        ‖new − original‖ per changed row (original is unit-norm).
    cosine : float64 array, shape (n_changed,)
        Cosine similarity between the new embedding and the original.
    """

    n_records: int
    rows: np.ndarray
    distance: np.ndarray
    cosine: np.ndarray

    @property
    def n_changed(self) -> int:
        return len(self.rows)


@dataclass
class QueryChanges:
    """How the fit changed each test query's ranking (queries with a relevant record).

    Attributes
    ----------
    query_ids : list of str
        The test queries, in split order.
    before, after : float64 arrays, shape (n_queries,)
        NDCG@10 over the raw corpus and over the fitted embeddings.
    first_before, first_after : int arrays, shape (n_queries,)
        1-based rank of the query's best-ranked relevant record (0: not in the top 100).
    pair_moved : bool array, shape (n_pairs,)
        Per (query, relevant record) pair: the fit changed that record.
    pair_before, pair_after : int arrays, shape (n_pairs,)
        The pair's record's rank in the query's list (0: not in the top 100).
    """

    query_ids: list[str]
    before: np.ndarray
    after: np.ndarray
    first_before: np.ndarray
    first_after: np.ndarray
    pair_moved: np.ndarray
    pair_before: np.ndarray
    pair_after: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        return self.after - self.before


def write_report(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    applied: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write ``report.html`` and its figures for a ``nudgekit fit`` output directory.

    Parameters
    ----------
    run_dir : path
        Directory written by ``nudgekit fit`` / :func:`nudgekit.pipeline.fit_dataset`:
        ``fit.json`` and ``embeddings.npy``.
    out_dir : path, optional
        Where to write ``report.html`` and the PNG figures (default: ``run_dir``).
    dataset_dir : path, optional
        The embedded dataset the run was fitted on (default: the path in ``fit.json``).
    applied : mapping, optional
        The record :func:`nudgekit.workflows.apply.apply_to_store` returned when the same
        fit was applied to a store, with its ``table``: the page then says what happened
        to the store (versions, rows written) and how to roll it back.
    progress : callable, optional
        ``progress(phase, done, total)``, called as long steps advance.

    Returns
    -------
    Path
        The written ``report.html``.

    Raises
    ------
    FileNotFoundError
        Missing run directory, ``fit.json``, ``embeddings.npy`` or dataset.
    ValueError
        Malformed ``fit.json``, embeddings that do not match the dataset, ``out_dir`` a file.
    ImportError
        matplotlib is not installed.
    """
    run = Path(run_dir)
    fit = read_fit(run)
    embeddings_path = run / "embeddings.npy"
    if not embeddings_path.is_file():
        raise FileNotFoundError(f"{run}: no embeddings.npy (is this a `nudgekit fit` output?)")
    if dataset_dir is not None:
        dataset = Path(dataset_dir)
    elif isinstance(fit.get("dataset"), str) and fit["dataset"]:
        dataset = Path(fit["dataset"])
        if not dataset.is_dir():
            raise FileNotFoundError(
                f"dataset directory {dataset} (recorded in {run / 'fit.json'}) does not "
                "exist; pass the dataset's current location with --dataset"
            )
    else:
        raise ValueError(f"{run / 'fit.json'}: no 'dataset' path; pass --dataset")
    out = Path(out_dir) if out_dir is not None else run
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    # fail on a missing matplotlib before the slow part, not after it
    _require_matplotlib()

    data = load_dataset(dataset)
    embeddings = load_matrix(embeddings_path)
    if embeddings.shape != data.corpus.shape:
        raise ValueError(
            f"{embeddings_path}: shape {embeddings.shape} does not match the corpus "
            f"{data.corpus.shape} of {dataset} (wrong --dataset?)"
        )
    if (fit["n_records"], fit["dim"]) != data.corpus.shape:
        raise ValueError(
            f"{run / 'fit.json'}: fitted on {fit['n_records']} × {fit['dim']} but the corpus "
            f"of {dataset} is {data.corpus.shape[0]} × {data.corpus.shape[1]} (wrong --dataset?)"
        )
    changed_path = run / "changed_rows.npy"
    if not changed_path.is_file():
        raise FileNotFoundError(
            f"{run}: no changed_rows.npy (written by `nudgekit fit` since 0.2); fit again"
        )
    changed_rows = np.load(changed_path, allow_pickle=False)
    if changed_rows.ndim != 1 or changed_rows.dtype.kind not in "iu":
        raise ValueError(f"{changed_path}: expected a 1-D array of row numbers")
    movement = record_movement(data.corpus, embeddings, changed_rows)
    test = _test_metrics(data, embeddings_path, changed_rows, progress)

    figures: dict[str, bytes] = {}
    curve = fit.get("validation_curve")
    if curve:
        figures["validation_curve.png"] = _validation_figure(fit)
    changes = None
    if isinstance(test, tuple):
        raw, fitted, changes = test
        figures["test_metrics.png"] = _metrics_figure(raw, fitted, fit["method"])
        figures["query_changes.png"] = _query_changes_figure(changes)
        test = raw, fitted
    texts = _query_texts(dataset, _example_ids(changes)) if changes is not None else {}
    page = render_html(
        fit, movement, test, figures, run=run, dataset=dataset, changes=changes,
        texts=texts, applied=applied,
    )  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        if name in figures:
            write_bytes(out / name, figures[name])
        else:
            # a figure left from an earlier report in this directory would contradict it
            (out / name).unlink(missing_ok=True)
    target = out / "report.html"
    write_bytes(target, page.encode("utf-8"))
    return target


def read_fit(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``run_dir/fit.json``; raise a one-line error if it is unusable."""
    run = Path(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"run directory {run} does not exist")
    if not run.is_dir():
        raise ValueError(f"{run} is not a directory (expected a `nudgekit fit` output directory)")
    path = run / "fit.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no fit.json (is this a `nudgekit fit` output?)")
    try:
        fit = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from None
    if not isinstance(fit, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if not isinstance(fit.get("method"), str):
        raise ValueError(f"{path}: missing or invalid 'method' (expected a string)")
    if not _is_number(fit.get("gamma")):
        raise ValueError(f"{path}: missing or invalid 'gamma' (expected a number)")
    for key in ("n_changed", "n_records", "dim"):
        value = fit.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: missing or invalid {key!r} (expected a count)")
    curve = fit.get("validation_curve")
    if curve is not None:
        ok = isinstance(curve, dict) and all(
            isinstance(curve.get(k), list) and all(_is_number(v) for v in curve[k])
            for k in ("gamma", "accuracy")
        )
        if not ok or len(curve["gamma"]) != len(curve["accuracy"]):
            raise ValueError(
                f"{path}: invalid 'validation_curve' (expected {{\"gamma\": [numbers], "
                '"accuracy": [numbers]}} of equal length)'
            )
    return fit


def record_movement(corpus: np.ndarray, embeddings: np.ndarray, rows: np.ndarray) -> Movement:
    """How far each changed row moved from its L2-normalised original.

    Only the changed ``rows`` are read from the corpus and the embeddings (both may be
    read-only memory maps).

    Parameters
    ----------
    corpus : array-like, shape (N, d)
        The dataset's raw corpus (normalised here, as ``nudgekit fit`` does).
    embeddings : array-like, shape (N, d)
        The fitted embeddings, same row order.
    rows : int array
        The corpus rows the fit changed, sorted.

    Returns
    -------
    Movement
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = corpus.shape[0]
    if len(rows) and (rows.min() < 0 or rows.max() >= n or np.any(np.diff(rows) <= 0)):
        raise ValueError(f"changed rows must be sorted, distinct rows of the corpus of {n}")
    original = normalised_rows(ArraySource(corpus, "corpus.npy").take(rows), ArraySource(corpus))
    new = np.asarray(embeddings[rows], dtype=np.float64).reshape(len(rows), corpus.shape[1])
    if not np.isfinite(new).all():
        row = int(rows[np.flatnonzero(~np.isfinite(new).all(axis=1))[0]])
        raise ValueError(f"embeddings.npy: row {row} contains NaN or infinite values")
    base = original.astype(np.float64)
    norms = np.linalg.norm(new, axis=1)
    # the original is unit-norm; guard an all-zero new row instead of dividing by 0
    cosine = np.clip(np.einsum("ij,ij->i", new, base) / np.maximum(norms, 1e-30), -1, 1)
    return Movement(n, rows, np.linalg.norm(new - base, axis=1), cosine)


def render_html(
    fit: Mapping[str, Any],
    movement: Movement,
    test: tuple[dict[str, Any], dict[str, Any]] | str | None,
    figures: Mapping[str, bytes],
    *,
    run: Path,
    dataset: Path,
    changes: QueryChanges | None = None,
    texts: Mapping[str, str] | None = None,
    applied: Mapping[str, Any] | None = None,
) -> str:
    """The report page: every value escaped, every figure inlined as a ``data:`` URI.

    ``test`` is ``(raw, fitted)`` test metrics (as ``nudgekit eval`` prints them), or why
    there are none (no test split); ``changes`` the per-query view of the same searches,
    ``texts`` query texts by id for its examples, ``applied`` an apply record (see
    :func:`write_report`).
    """
    method = str(fit["method"])
    gamma = float(fit["gamma"])
    n_records = int(fit["n_records"])
    n_changed = int(fit["n_changed"])
    raw, fitted = test if isinstance(test, tuple) else ({}, {})
    title = f"nudgekit report: {method} on {dataset.name or dataset}"

    cards = [
        ("method", method),
        ("γ" + ("" if fit.get("gamma_searched", True) else " (fixed)"), f"{gamma:.6g}"),
        ("records changed", f"{n_changed:,} of {n_records:,} ({_percent(n_changed, n_records)})"),
    ]
    if fit.get("validation_accuracy") is not None:
        cards.append((_curve_words(fit)[2], f"{fit['validation_accuracy']:.4f}"))
    if raw:
        cards.append(("test ndcg@10", f"{raw['ndcg@10']:.4f} → {fitted['ndcg@10']:.4f}"))

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>nudgekit fit report</h1>",
        f'<p class="sub">run <code>{_e(run.resolve())}</code>'
        + (f" · fitted {_e(fit['created'])}" if fit.get("created") else "")
        + "</p>",
        '<div class="cards">',
        *(
            f'<div class="card"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(value)}</div></div>'
            for label, value in cards
        ),
        "</div>",
        *(_store_section(applied) if applied else []),
        *_validation_section(fit, figures),
        *_test_section(raw, fitted, test, figures),
        *(_query_section(changes, texts or {}, figures) if changes is not None else []),
        *_movement_section(fit, movement),
        *_inputs_section(fit, dataset, raw),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


# -- page sections -----------------------------------------------------------------------


def _validation_section(fit: Mapping[str, Any], figures: Mapping[str, bytes]) -> list[str]:
    out = ["<h2>Choosing γ on the validation queries</h2>"]
    gamma = float(fit["gamma"])
    if "validation_curve.png" in figures:
        step = _is_step(fit)
        kind = (
            "exact: accuracy changes only at the breakpoints shown, and holds until the next"
            if step
            else "evaluated on a grid of γ values"
        )
        if not _log_axis(np.asarray(fit["validation_curve"]["gamma"], dtype=np.float64)):
            zero = "γ = 0 is the raw corpus"
        elif step:
            zero = (
                "γ is on a log axis: the level at the left edge holds down to γ = 0, the raw corpus"
            )
        else:
            zero = "γ is on a log axis: the dotted line is γ = 0, the raw corpus"
        symbol, _, criterion = _curve_words(fit)
        selection = fit.get("selection") or {}
        if selection:
            out.append(
                f"<p>{_e(criterion)} of {_e(selection.get('n_scored', '?'))} labelled queries "
                f"against {symbol} ({_e(selection.get('rule', ''))}; family "
                f"{_e(fit.get('family', ''))}). The chosen {symbol} = {gamma:.6g} is marked; "
                f"the final fit used all {_e(selection.get('n_labelled', '?'))} labelled "
                "queries.</p>"
            )
        else:
            out.append(
                f"<p>Validation top-{_e(fit.get('val_k', 1))} accuracy of "
                f"{_e(fit.get('n_val_queries', '?'))} queries against the step size γ ({kind}). "
                f"The chosen γ = {gamma:.6g} is marked; {zero}.</p>"
            )
        out.append(_img(figures["validation_curve.png"], "validation accuracy against γ"))
    elif not fit.get("gamma_searched", True):
        out.append(
            f'<p class="note">γ was fixed at {gamma:.6g} (<code>--gamma</code>), so no '
            "validation search was run: there is no validation curve.</p>"
        )
    else:
        out.append('<p class="note">fit.json holds no validation curve.</p>')
    return out


def _test_section(
    raw: Mapping[str, Any],
    fitted: Mapping[str, Any],
    test: tuple[dict[str, Any], dict[str, Any]] | str | None,
    figures: Mapping[str, bytes],
) -> list[str]:
    out = ["<h2>Test split: before and after</h2>"]
    if not raw:
        reason = test if isinstance(test, str) else "the dataset has no test split"
        out.append(f'<p class="note">No test metrics: {_e(reason)}.</p>')
        return out
    out.append(
        f"<p>Exact inner-product k-NN over the whole corpus for the {raw['n_queries']:,} test "
        "queries, with the raw (L2-normalised) corpus and with the fitted embeddings. "
        "recall@10 divides by the number of relevant records, r_cap@10 by "
        "min(relevant, 10).</p>"
    )
    out.append(_img(figures["test_metrics.png"], "test metrics, raw corpus against fitted"))
    out.append(
        '<table class="num"><thead><tr><th>metric</th><th>raw corpus</th><th>fitted</th>'
        "<th>change</th></tr></thead><tbody>"
    )
    for key in TABLE_METRICS:
        if key not in raw or key not in fitted:
            continue
        change = fitted[key] - raw[key]
        sign = "up" if change > 0 else "down" if change < 0 else ""
        out.append(
            f"<tr><td>{_e(key)}</td><td>{raw[key]:.4f}</td><td>{fitted[key]:.4f}</td>"
            f'<td class="{sign}">{change:+.4f}</td></tr>'
        )
    out.append("</tbody></table>")
    return out


def _movement_section(fit: Mapping[str, Any], movement: Movement) -> list[str]:
    n, changed = movement.n_records, movement.n_changed
    out = [
        "<h2>How far records moved</h2>",
        f"<p><strong>{changed:,} of {n:,} records ({_percent(changed, n)})</strong> have a new "
        "embedding (the fit's changed_rows.npy); the rest keep their normalised original.</p>",
    ]
    if not changed:
        return out
    bound = _distance_bound(fit)
    if bound is not None:
        out.append(f'<p class="note">{_e(bound[1])}</p>')
    out.append(
        '<table class="num"><thead><tr><th>changed records</th><th>min</th><th>median</th>'
        "<th>max</th></tr></thead><tbody>"
    )
    for label, values in (
        ("‖new − original‖", movement.distance),
        ("cosine(new, original)", movement.cosine),
    ):
        lo, mid, hi = np.min(values), np.median(values), np.max(values)
        out.append(
            f"<tr><td>{_e(label)}</td><td>{lo:.4f}</td><td>{mid:.4f}</td><td>{hi:.4f}</td></tr>"
        )
    out.append("</tbody></table>")
    return out


def _query_section(
    changes: QueryChanges, texts: Mapping[str, str], figures: Mapping[str, bytes]
) -> list[str]:
    delta = changes.delta
    n = len(delta)
    up, down = delta > 0, delta < 0
    same = n - int(up.sum()) - int(down.sum())
    out = [
        "<h2>Which test queries gained or lost</h2>",
        f"<p>Of the {n:,} test queries, <strong>{int(up.sum()):,} rank their relevant "
        f"records better</strong> (NDCG@10 up, by {_mean(delta[up]):+.3f} on average), "
        f"<strong>{int(down.sum()):,} worse</strong> (by {_mean(delta[down]):+.3f}) and "
        f"{same:,} the same. A fit can cost a query when a record moved for other queries "
        "now outranks its answer.</p>",
        _img(figures["query_changes.png"], "per-query change in NDCG@10; ranks of moved records"),
        '<table class="num"><thead><tr><th>(test query, relevant record) pairs</th>'
        "<th>pairs</th><th>at rank 1</th><th>in the top 10</th></tr></thead><tbody>",
    ]
    for label, pick in (
        ("record moved by the fit", changes.pair_moved),
        ("record kept", ~changes.pair_moved),
    ):
        if not pick.any():  # e.g. every test answer is also a training answer
            continue
        before, after = changes.pair_before[pick], changes.pair_after[pick]
        out.append(
            f"<tr><td>{_e(label)}</td><td>{int(pick.sum()):,}</td>"
            f"<td>{_share(before == 1)} → {_share(after == 1)}</td>"
            f"<td>{_share((before >= 1) & (before <= 10))} → "
            f"{_share((after >= 1) & (after <= 10))}</td></tr>"
        )
    out.append("</tbody></table>")
    gains, losses = _examples(changes)
    for title, picked in (("Largest gains", gains), ("Largest losses", losses)):
        if not len(picked):
            continue
        out += [
            f"<h3>{title}</h3>",
            '<table class="num"><thead><tr><th>test query</th><th>NDCG@10</th>'
            "<th>best relevant rank</th></tr></thead><tbody>",
        ]
        for i in picked:
            qid = changes.query_ids[i]
            shown = f"{texts[qid]} ({qid})" if qid in texts else qid
            out.append(
                f"<tr><td>{_e(shown)}</td>"
                f"<td>{changes.before[i]:.3f} → {changes.after[i]:.3f}</td>"
                f"<td>{_rank(changes.first_before[i])} → {_rank(changes.first_after[i])}</td>"
                "</tr>"
            )
        out.append("</tbody></table>")
    return out


def _store_section(applied: Mapping[str, Any]) -> list[str]:
    store, table = str(applied.get("store", "")), applied.get("table")
    rollback = "nudgekit rollback --store " + shlex.quote(store)
    if table:
        rollback += " --table " + shlex.quote(str(table))
    rows = [
        ("store", store + (f" (table {table})" if table else "")),
        ("rows written", f"{int(applied.get('n_written', 0)):,}"),
        (
            "store version",
            f"{applied.get('version_before', '–')} → {applied.get('version_after', '–')}",
        ),
        ("originals", "kept beside the store: every written row can be restored"),
    ]
    out = [
        "<h2>What happened to the store</h2>",
        "<p>The same fit was applied to the store in place: only the changed rows were "
        "rewritten, the table's schema and other columns are untouched.</p>",
        '<table class="kv"><tbody>',
        *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows),
        "</tbody></table>",
        f"<p>Undo it, row by row (what was written to the store since is kept): "
        f"<code>{_e(rollback)}</code></p>",
    ]
    return out


def _inputs_section(fit: Mapping[str, Any], dataset: Path, raw: Mapping[str, Any]) -> list[str]:
    def count(key: str) -> str:
        value = fit.get(key)
        return f"{value:,}" if isinstance(value, int) else "–"

    selection = fit.get("selection") if isinstance(fit.get("selection"), dict) else None
    rows = [
        ("dataset", dataset.resolve()),
        ("embedding model", fit.get("model") or "–"),
        ("records × dims", f"{int(fit['n_records']):,} × {int(fit['dim']):,}"),
        (
            "train / val / test queries",
            " / ".join(
                [
                    count("n_train_queries"),
                    count("n_val_queries")
                    if fit.get("gamma_searched", True)
                    else "not used (γ fixed)",
                    f"{raw['n_queries']:,}" if raw else "–",
                ]
            ),
        ),
        ("method", fit["method"]),
        (
            _curve_words(fit)[0],
            f"{float(fit['gamma']):.6g}"
            + (
                f" ({selection.get('rule', 'cross-validated')})"
                if selection
                else " (searched on validation)"
                if fit.get("gamma_searched", True)
                else " (fixed)"
            ),
        ),
        *([] if selection else [("val_k", fit.get("val_k", "–"))]),
        ("device", fit.get("device", "–")),
        ("fitted", fit.get("created", "–")),
    ]
    out = ["<h2>Inputs</h2>", '<table class="kv"><tbody>']
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows]
    out.append("</tbody></table>")

    timings = fit.get("timings_s")
    if isinstance(timings, dict) and timings:
        out += [
            "<h3>Timings</h3>",
            '<table class="num"><thead><tr><th>phase</th><th>seconds</th></tr></thead><tbody>',
        ]
        for phase, seconds in timings.items():
            shown = f"{seconds:.3f}" if _is_number(seconds) else str(seconds)
            strong = ' class="total"' if phase == "total" else ""
            out.append(f"<tr{strong}><td>{_e(phase)}</td><td>{_e(shown)}</td></tr>")
        out.append("</tbody></table>")
    versions = fit.get("versions")
    if isinstance(versions, dict) and versions:
        out += ["<h3>Versions</h3>", '<table class="kv"><tbody>']
        out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in versions.items()]
        out.append("</tbody></table>")
    return out


# -- figures -----------------------------------------------------------------------------


def _validation_figure(fit: Mapping[str, Any]) -> bytes:
    curve = fit["validation_curve"]
    symbol, axis, criterion = _curve_words(fit)
    order = np.argsort(np.asarray(curve["gamma"], dtype=np.float64), kind="stable")
    g = np.asarray(curve["gamma"], dtype=np.float64)[order]
    acc = np.asarray(curve["accuracy"], dtype=np.float64)[order]
    gamma, step = float(fit["gamma"]), _is_step(fit)
    chosen = fit.get("validation_accuracy")
    if chosen is None:
        chosen = float(acc[max(int(np.searchsorted(g, gamma, side="right")) - 1, 0)])

    fig, ax = _figure(8.0, 4.2)
    positive = g[g > 0]
    log = _log_axis(g)
    at_zero = acc[g == 0]
    if log:
        ax.set_xscale("log")
        left, right = positive.min() / 2, max(positive.max(), gamma) * 2
        gp, ap = g[g > 0], acc[g > 0]
        if step and len(at_zero):
            # the step function is flat on [0, first breakpoint): start it at the edge
            gp, ap = np.r_[left, gp], np.r_[at_zero[0], ap]
        elif len(at_zero):
            ax.axhline(
                at_zero[0],
                color=_RAW_COLOUR,
                ls=":",
                lw=1.2,
                label=f"γ = 0 (raw corpus): {at_zero[0]:.3f}",
            )
        ax.set_xlim(left, right)
    else:
        gp, ap = g, acc
        right = max(g.max(), gamma) + 0.05 * max(g.max() - g.min(), gamma, 1e-12)
        ax.set_xlim(min(g.min(), gamma), right)
    if step:
        ax.step(
            np.r_[gp, right],
            np.r_[ap, ap[-1]],
            where="post",
            color=_FIT_COLOUR,
            lw=1.6,
            label="validation accuracy",
        )
    else:
        ax.plot(gp, ap, color=_FIT_COLOUR, marker="o", ms=4, lw=1.4, label="validation accuracy")
    mark = gamma if not log or gamma > 0 else ax.get_xlim()[0]
    ax.axvline(mark, color=_MARK_COLOUR, ls="--", lw=1.2)
    ax.plot(
        [mark],
        [chosen],
        "o",
        color=_MARK_COLOUR,
        ms=8,
        zorder=3,
        label=f"chosen {symbol} = {gamma:.4g} ({criterion} {chosen:.3f})",
    )
    ax.set_xlabel(axis + (", log scale" if log else ""))
    ax.set_ylabel(criterion)
    n_val = fit.get("n_val_queries")
    ax.set_title(
        f"{_method_name(fit['method'])}: {criterion} against {symbol}"
        + (f" ({n_val:,} queries)" if isinstance(n_val, int) else "")
    )
    # room above the best point for its marker; the legend goes under the axes, where it
    # cannot hide part of the curve
    top, bottom = max(float(acc.max()), chosen), min(float(acc.min()), chosen)
    pad = max(0.08 * (top - bottom), 0.01)
    ax.set_ylim(bottom - pad, top + pad)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, fontsize=9, frameon=False)
    return _png(fig)


def _log_axis(gammas: np.ndarray) -> bool:
    """Whether to draw γ on a log axis."""
    positive = gammas[gammas > 0]
    # NUDGE-M breakpoints span decades (1e-3 … 1e2): on a linear axis all but the tail
    # would sit in one pixel column
    return len(positive) > 1 and positive.max() / positive.min() > 100


def _metrics_figure(raw: Mapping[str, Any], fitted: Mapping[str, Any], method: str) -> bytes:
    fig, ax = _figure(8.0, 4.2)
    x = np.arange(len(BAR_METRICS))
    width = 0.38
    for offset, values, label, colour in (
        (-width / 2, raw, "raw corpus", _RAW_COLOUR),
        (width / 2, fitted, f"fitted ({_method_name(method)})", _FIT_COLOUR),
    ):
        bars = ax.bar(
            x + offset, [values[m] for m in BAR_METRICS], width, label=label, color=colour
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(x, BAR_METRICS)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score (0–1, higher is better)")
    ax.set_title(f"Test split ({raw['n_queries']:,} queries): raw corpus against fitted")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", fontsize=9, ncols=2)
    return _png(fig)


def _query_changes_figure(changes: QueryChanges) -> bytes:
    fig, (left, right) = _figure(10.0, 4.0, ncols=2)
    delta = np.sort(changes.delta)[::-1]
    x = np.arange(1, len(delta) + 1)
    left.fill_between(x, 0, delta, where=delta > 0, step="mid", color="#1a7f37", lw=0)
    left.fill_between(x, 0, delta, where=delta < 0, step="mid", color="#c92a2a", lw=0)
    left.axhline(0, color="#5b6570", lw=0.8)
    up, down = int((delta > 0).sum()), int((delta < 0).sum())
    left.set_title(
        f"Per test query: {up:,} better, {down:,} worse, {len(delta) - up - down:,} same"
    )
    left.set_xlabel("test queries, largest gain first")
    left.set_ylabel("change in NDCG@10")
    left.set_xlim(0.5, len(delta) + 0.5)
    left.grid(alpha=0.3)

    labels = [name for name, _, _ in RANK_BUCKETS] + ["beyond 100"]
    moved = changes.pair_moved
    width = 0.38
    positions = np.arange(len(labels))
    for offset, ranks, label, colour in (
        (-width / 2, changes.pair_before[moved], "before (raw corpus)", _RAW_COLOUR),
        (width / 2, changes.pair_after[moved], "after (fitted)", _FIT_COLOUR),
    ):
        counts = _rank_counts(ranks)
        bars = right.bar(positions + offset, counts, width, label=label, color=colour)
        right.bar_label(bars, fontsize=8, padding=2)
    right.set_xticks(positions, labels)
    right.set_xlabel("rank in the query's results")
    right.set_ylabel("(test query, relevant record) pairs")
    right.set_title(f"The {int(moved.sum()):,} test answers the fit moved: their rank")
    right.grid(axis="y", alpha=0.3)
    right.set_axisbelow(True)
    right.legend(loc="upper right", fontsize=9)
    return _png(fig)


def _rank_counts(ranks: np.ndarray) -> list[int]:
    """How many ranks fall in each of :data:`RANK_BUCKETS`, then beyond the last (0)."""
    counts = [int(((ranks >= lo) & (ranks <= hi)).sum()) for _, lo, hi in RANK_BUCKETS]
    return [*counts, int((ranks == 0).sum())]


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg: renders without a display, leaves pyplot alone
    axes = fig.subplots(1, ncols)
    return fig, axes


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    # no timestamp/software metadata: the same fit renders to the same bytes
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# -- helpers -----------------------------------------------------------------------------


def _test_metrics(
    data: EmbeddedDataset,
    embeddings: Path,
    changed_rows: np.ndarray,
    progress: ProgressCallback | None,
) -> tuple[dict[str, Any], dict[str, Any], QueryChanges] | str:
    """Test metrics before and after (as ``nudgekit eval``) and their per-query view, from
    one search of the raw corpus and one of the fitted embeddings; or why there are none."""
    if not data.splits.get("test"):
        return (
            "the dataset has no test split"
            if "test" not in data.splits
            else ("the dataset's test split is empty")
        )
    before, relevance = rank_split(data, "test", depth=_DEPTH, progress=progress)
    after, _ = rank_split(data, "test", embeddings=embeddings, depth=_DEPTH, progress=progress)
    ks = (1, 10, _DEPTH)
    raw, fitted = retrieval_metrics(before, relevance, ks), retrieval_metrics(after, relevance, ks)
    keep = np.flatnonzero(relevance.counts() > 0)  # the queries the metrics average over
    before, after, relevance = before[keep], after[keep], relevance.take(keep)
    pair_before, pair_after = relevant_ranks(before, relevance), relevant_ranks(after, relevance)
    ids = data.splits["test"]
    changes = QueryChanges(
        query_ids=[str(ids[i]) for i in keep],
        before=per_query_ndcg(before, relevance, 10),
        after=per_query_ndcg(after, relevance, 10),
        first_before=_first_rank(pair_before, relevance.query_of_entry(), len(keep)),
        first_after=_first_rank(pair_after, relevance.query_of_entry(), len(keep)),
        pair_moved=np.isin(relevance.indices, changed_rows),
        pair_before=pair_before,
        pair_after=pair_after,
    )
    return raw, fitted, changes


def _first_rank(ranks: np.ndarray, query: np.ndarray, n_queries: int) -> np.ndarray:
    """Per query, the best (smallest non-zero) rank of its relevant records; 0 if none."""
    best = np.full(n_queries, np.iinfo(np.int64).max)
    found = ranks > 0
    np.minimum.at(best, query[found], ranks[found])
    return np.where(best == np.iinfo(np.int64).max, 0, best)


def _example_ids(changes: QueryChanges) -> list[str]:
    gains, losses = _examples(changes)
    return [changes.query_ids[i] for i in (*gains, *losses)]


def _examples(changes: QueryChanges) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the largest gains and the largest losses (ties: split order)."""
    delta = changes.delta
    order = np.argsort(-delta, kind="stable")
    gains = order[delta[order] > 0][:N_EXAMPLES]
    order = np.argsort(delta, kind="stable")
    losses = order[delta[order] < 0][:N_EXAMPLES]
    return gains, losses


def _query_texts(dataset: Path, ids: list[str]) -> dict[str, str]:
    """Texts of the given query ids from the dataset's ``texts/queries.jsonl`` (BEIR rows,
    as the bundled sample has), when there is one; ids stand in for texts otherwise."""
    path = dataset / "texts" / "queries.jsonl"
    wanted, found = set(ids), {}
    if not wanted or not path.is_file():
        return found
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line) if line.strip() else None
                if isinstance(row, dict) and str(row.get("_id")) in wanted:
                    found[str(row["_id"])] = str(row.get("text", ""))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # texts only decorate the page: a broken file is not the report's failure
    return found


def _distance_bound(fit: Mapping[str, Any]) -> tuple[float, str, str] | None:
    """The method's limit on ‖Δ‖: (value, sentence for the page, legend label)."""
    gamma = float(fit["gamma"])
    if fit["method"] == "nudge-n" or fit.get("family") == "nudge-n":  # the default's N too
        root = math.sqrt(max(gamma, 0.0))
        return (
            root,
            f"NUDGE-N keeps outputs unit-norm and moves each record at most √γ = {root:.4f} "
            "(‖Δ‖² ≤ γ); records whose bound is active sit exactly on it.",
            f"bound √γ = {root:.4g}",
        )
    if fit["method"] == "nudge-m":
        return (
            gamma,
            f"NUDGE-M moves each changed record by γ = {gamma:.4g} along the unit direction of "
            "its training queries (Δ = γ·Ĝ), so ‖Δ‖ = γ; outputs are not unit-norm.",
            f"γ = {gamma:.4g}",
        )
    return None


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            "nudgekit report needs matplotlib: pip install matplotlib "
            "(or the nudgekit[report] extra)"
        ) from None


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


def _curve_words(fit: Mapping[str, Any]) -> tuple[str, str, str]:
    """The curve's parameter symbol, axis label and criterion, for the page and figure."""
    curve = fit.get("validation_curve") or {}
    criterion = curve.get("criterion") or f"validation top-{fit.get('val_k', 1)} accuracy"
    if curve.get("parameter") == "kappa":
        return "κ", "κ (shrink: a record turns n/(n + κ) of its angle to its queries)", criterion
    return "γ", "γ (step size)", criterion


def _is_step(fit: Mapping[str, Any]) -> bool:
    """Whether the validation curve is a step function (γ from NUDGE-M's exact sweep)."""
    search = fit.get("gamma_search")
    if search is None:  # fit.json of an earlier version: ask the registry
        spec = METHODS.get(str(fit["method"]))
        search = spec.estimator.gamma_search if spec and spec.estimator else "grid"
    return search == "sweep"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def _share(hit: np.ndarray) -> str:
    return f"{100 * float(hit.mean()):.1f} %" if len(hit) else "–"


def _rank(rank: int) -> str:
    return str(int(rank)) if rank > 0 else f"> {_DEPTH}"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def _method_name(method: str) -> str:
    return method.upper() if method.startswith("nudge-") else method


_CSS = """
body{margin:0;background:#f6f7f9;color:#1d232a;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:980px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.2em;margin:32px 0 8px;padding-top:12px;border-top:1px solid #e3e6ea}
h3{font-size:1em;margin:20px 0 6px}
.sub{color:#5b6570;margin:0 0 16px;overflow-wrap:anywhere}
code{font:0.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 auto;border:1px solid #e3e6ea;border-radius:6px;padding:8px 14px}
.card .label{color:#5b6570;font-size:.85em}
.card .value{font-size:1.15em;font-weight:600;font-variant-numeric:tabular-nums;
white-space:nowrap}
figure{margin:12px 0}
img{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{padding:4px 12px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #c9ced4}
table.num td+td,table.num th+th{text-align:right}
table.kv th{font-weight:normal;color:#5b6570;white-space:nowrap}
table.kv td{overflow-wrap:anywhere}
tr.total td{font-weight:600}
td.up{color:#1a7f37}
td.down{color:#c92a2a}
.note{color:#5b6570;font-style:italic}
"""


__all__ = ["FIGURES", "Movement", "QueryChanges", "read_fit", "record_movement", "write_report"]
