"""``nudgekit report``: the HTML page about one fit, its figures, and its errors."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import nudgekit.cli as cli
import nudgekit.cli._report  # noqa: F401  (registers the command until cli/__init__ does)
from nudgekit.io.dataset import load_dataset
from nudgekit.workflows.evaluate import evaluate_dataset
from nudgekit.workflows.fit import fit_dataset
from nudgekit.workflows.report import FIGURES, record_movement, write_report

from .test_dataset import Written, rewrite_json, write_dataset

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


@dataclass
class Run:
    name: str
    run_dir: Path
    fit: dict
    page_path: Path

    @property
    def page(self) -> str:
        return self.page_path.read_text(encoding="utf-8")


#: name → fit_dataset options: both methods with a γ search, and a fixed γ (no curve)
RUNS = {
    "nudge-n": {"method": "nudge-n"},
    "nudge-m": {"method": "nudge-m"},
    "fixed": {"method": "nudge-n", "gamma": 0.05},
    "default": {},  # nudge-cv: a cross-validated choice, not a validation search
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def runs(written, tmp_path_factory) -> dict[str, Run]:
    """Each of RUNS fitted and reported once for the module."""
    done = {}
    for name, options in RUNS.items():
        run_dir = tmp_path_factory.mktemp(name)
        fit = fit_dataset(written.root, run_dir, **options)
        done[name] = Run(name, run_dir, fit, write_report(run_dir))
    return done


@pytest.fixture(params=[name for name in RUNS if name != "default"])
def run(request, runs) -> Run:
    """The runs that move records (the default picks γ = 0 on this small dataset)."""
    return runs[request.param]


class _Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser.tags


def inline_pngs(page: str) -> list[bytes]:
    prefix = "data:image/png;base64,"
    return [
        base64.b64decode(attrs["src"][len(prefix) :])
        for tag, attrs in tags_of(page)
        if tag == "img" and attrs.get("src", "").startswith(prefix)
    ]


def copy_run(run: Run, to: Path) -> Path:
    shutil.copytree(run.run_dir, to)
    return to


# -- what is written ---------------------------------------------------------------------


def test_report_writes_the_page_and_one_png_per_figure(run):
    assert run.page_path == run.run_dir / "report.html"
    expected = set(FIGURES) - ({"validation_curve.png"} if run.name == "fixed" else set())
    assert {p.name for p in run.run_dir.glob("*.png")} == expected
    assert not list(run.run_dir.glob(".*.partial"))


def test_pngs_are_valid_images_that_matplotlib_reads_back(run):
    from matplotlib.image import imread

    for path in run.run_dir.glob("*.png"):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400


def test_page_is_self_contained(run):
    page = run.page
    tags = tags_of(page)
    names = {tag for tag, _ in tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base", "source"}
    for tag, attrs in tags:
        for attr in ("src", "href", "srcset", "data", "action", "poster", "background"):
            if attr in attrs:
                assert (attrs[attr] or "").startswith("data:"), (tag, attr, attrs[attr])
    assert not re.search(r"https?://|url\(|@import", page)


def test_page_inlines_exactly_the_png_files(run):
    files = [run.run_dir / name for name in FIGURES if (run.run_dir / name).exists()]
    assert inline_pngs(run.page) == [f.read_bytes() for f in files]


def test_page_shows_the_fit_and_test_numbers(written, run):
    page, fit = run.page, run.fit
    assert f"{fit['n_changed']:,} of {fit['n_records']:,}" in page
    assert f"{fit['gamma']:.6g}" in page
    assert fit["method"] in page
    assert f"{fit['n_records']:,} × {fit['dim']:,}" in page
    test_count = len(written.splits["test"])
    val = f"{fit['n_val_queries']:,}" if fit["gamma_searched"] else "not used (γ fixed)"
    assert f"{fit['n_train_queries']:,} / {val} / {test_count:,}" in page
    raw = evaluate_dataset(written.root)
    fitted = evaluate_dataset(written.root, embeddings=run.run_dir / "embeddings.npy")
    for key in ("ndcg@10", "recall@10", "r_cap@10", "mrr@10", "accuracy@1", "map@100"):
        row = f"<td>{key}</td><td>{raw[key]:.4f}</td><td>{fitted[key]:.4f}</td>"
        assert row in page, key
    if fit["validation_accuracy"] is not None:
        assert f"{fit['validation_accuracy']:.4f}" in page
    for phase in fit["timings_s"]:
        assert f"<td>{phase}</td><td>{fit['timings_s'][phase]:.3f}</td>" in page
    assert fit["versions"]["numpy"] in page
    assert fit["created"] in page


def test_fixed_gamma_page_says_there_is_no_curve(runs):
    page = runs["fixed"].page
    assert "no validation curve" in page
    assert "(fixed)" in page
    assert len(inline_pngs(page)) == 2


def test_searched_pages_describe_their_curve(runs):
    assert "breakpoints" in runs["nudge-m"].page
    assert "grid" in runs["nudge-n"].page


def test_report_bytes_do_not_change_when_rendered_again(runs, tmp_path):
    run = runs["nudge-m"]
    again = write_report(run.run_dir, tmp_path)
    for name in FIGURES:
        assert (tmp_path / name).read_bytes() == (run.run_dir / name).read_bytes()
    assert again.read_text(encoding="utf-8") == run.page


# -- which test queries gained or lost ---------------------------------------------------


def _brute_force_changes(written, run):
    """Per test query NDCG@10 and best relevant rank, from a dense search written out here."""
    from nudgekit.evaluation.metrics import retrieval_metrics

    data = load_dataset(written.root)
    test = data.split("test")
    out = []
    for corpus in (np.asarray(data.corpus, np.float32), np.load(run.run_dir / "embeddings.npy")):
        scores = test.queries.astype(np.float32) @ corpus.T
        ranked = np.lexsort((np.arange(corpus.shape[0])[None, :].repeat(len(scores), 0), -scores))
        ndcg, first = [], []
        for q in range(len(scores)):
            one = test.relevance.take(np.array([q]))
            if one.nnz == 0:
                continue
            ndcg.append(retrieval_metrics(ranked[q : q + 1, :100], one, ks=[10])["ndcg@10"])
            where = np.flatnonzero(np.isin(ranked[q, :100], one.indices))
            first.append(int(where[0]) + 1 if len(where) else 0)
        out.append((np.array(ndcg), np.array(first)))
    return out


def test_query_section_counts_gains_and_losses_as_a_dense_search_does(written, run):
    (before, _), (after, _) = _brute_force_changes(written, run)
    delta = after - before
    better, worse = int((delta > 1e-9).sum()), int((delta < -1e-9).sum())
    page = run.page
    assert "How far records moved" in page and "histogram" not in page
    assert f"Of the {len(delta):,} test queries, <strong>{better:,} rank" in page
    assert f"<strong>{worse:,} worse</strong>" in page
    assert f"{len(delta) - better - worse:,} the same" in page


def test_largest_gain_is_shown_with_its_ndcg_and_best_rank(written, run):
    (before, first_before), (after, first_after) = _brute_force_changes(written, run)
    delta = after - before
    if not (delta > 1e-9).any():
        pytest.skip("this fit improved no test query")
    top = int(np.argmax(delta))
    rank = lambda r: str(r) if r else "&gt; 100"  # noqa: E731
    row = (
        f"<td>{before[top]:.3f} → {after[top]:.3f}</td>"
        f"<td>{rank(first_before[top])} → {rank(first_after[top])}</td>"
    )
    assert "<h3>Largest gains</h3>" in run.page
    assert row in run.page


def test_default_method_page_names_its_criterion_not_top1_accuracy(runs):
    page = runs["default"].page
    assert "cross-validat" in page
    assert "validation top-1 accuracy" not in page
    assert "<th>val_k</th>" not in page


def test_report_of_an_applied_fit_says_what_happened_to_the_store(runs, tmp_path):
    run = runs["nudge-n"]
    applied = {"store": "lancedb:/data/my store.lancedb", "table": "docs", "n_written": 12,
               "version_before": 3, "version_after": 4}  # fmt: skip
    page = write_report(run.run_dir, tmp_path, applied=applied).read_text(encoding="utf-8")
    assert "What happened to the store" in page
    assert "<td>12</td>" in page and "3 → 4" in page
    assert (
        "nudgekit rollback --store &#x27;lancedb:/data/my store.lancedb&#x27; --table docs" in page
    )
    assert "What happened to the store" not in run.page


# -- how far records moved ---------------------------------------------------------------


def test_changed_rows_are_exactly_the_rows_that_differ(written, run):
    data = load_dataset(written.root)
    embeddings = np.load(run.run_dir / "embeddings.npy")
    rows = np.load(run.run_dir / "changed_rows.npy")
    unit = np.asarray(data.corpus, dtype=np.float32)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    differs = np.flatnonzero(np.abs(embeddings - unit).max(axis=1) > 1e-6)
    np.testing.assert_array_equal(rows, differs)
    assert len(rows) == run.fit["n_changed"] > 0


def test_movement_measures_the_changed_records(written, run):
    data = load_dataset(written.root)
    embeddings = np.load(run.run_dir / "embeddings.npy", mmap_mode="r")
    rows = np.load(run.run_dir / "changed_rows.npy")
    moved = record_movement(data.corpus, embeddings, rows)
    assert moved.n_records == data.n_records
    assert moved.n_changed == run.fit["n_changed"] > 0
    gamma = run.fit["gamma"]
    if run.fit["method"] == "nudge-n":
        assert moved.distance.max() <= math.sqrt(gamma) + 1e-5
    else:
        np.testing.assert_allclose(moved.distance, gamma, rtol=1e-4)
    assert np.all((moved.cosine >= -1) & (moved.cosine <= 1))
    unit = data.corpus[moved.rows] / np.linalg.norm(data.corpus[moved.rows], axis=1)[:, None]
    new = np.asarray(embeddings[moved.rows], dtype=np.float64)
    np.testing.assert_allclose(moved.distance, np.linalg.norm(new - unit, axis=1), atol=1e-5)
    cosine = np.sum(new * unit, axis=1) / np.linalg.norm(new, axis=1)
    np.testing.assert_allclose(moved.cosine, np.clip(cosine, -1, 1), atol=1e-6)


def test_movement_refuses_rows_outside_the_corpus(written):
    corpus = written.problem.corpus
    with pytest.raises(ValueError, match="changed rows must be sorted"):
        record_movement(corpus, corpus, np.array([len(corpus)]))
    with pytest.raises(ValueError, match="changed rows must be sorted"):
        record_movement(corpus, corpus, np.array([3, 3]))


def test_report_of_a_run_without_changed_rows_says_fit_again(runs, tmp_path):
    moved = copy_run(runs["nudge-n"], tmp_path / "old")
    (moved / "changed_rows.npy").unlink()
    with pytest.raises(FileNotFoundError, match="no changed_rows"):
        write_report(moved)


# -- options and unusual inputs ----------------------------------------------------------


def test_out_dir_and_dataset_override(written, runs, tmp_path):
    moved = copy_run(runs["nudge-n"], tmp_path / "moved")
    for name in ("report.html", *FIGURES):
        (moved / name).unlink(missing_ok=True)
    rewrite_json(moved / "fit.json", lambda fit: fit.update(dataset=str(tmp_path / "gone")))
    with pytest.raises(FileNotFoundError, match="--dataset"):
        write_report(moved)
    page = write_report(moved, tmp_path / "out", written.root)
    assert page == tmp_path / "out" / "report.html"
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.html", *FIGURES}
    assert not (moved / "report.html").exists()


def test_stale_curve_figure_is_removed(runs, tmp_path):
    (tmp_path / "validation_curve.png").write_bytes(b"old")
    write_report(runs["fixed"].run_dir, tmp_path)
    assert not (tmp_path / "validation_curve.png").exists()


def test_dataset_without_test_split_renders_without_metrics(written, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(written.root, data)
    rewrite_json(data / "splits.json", lambda splits: splits.pop("test"))
    fit_dataset(data, tmp_path / "run")
    page = write_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "No test metrics: the dataset has no test split." in page
    assert not (tmp_path / "run" / "test_metrics.png").exists()


def test_text_from_paths_and_metadata_is_escaped(written, tmp_path):
    data = tmp_path / 'data <b>&"x'
    shutil.copytree(written.root, data)
    (data / "embed_meta.json").write_text(json.dumps({"model": "<script>alert(1)</script>&"}))
    run_dir = tmp_path / "run <i>&"
    fit_dataset(data, run_dir, method="nudge-m")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page
    assert "data &lt;b&gt;&amp;&quot;x" in page
    assert "run &lt;i&gt;&amp;" in page
    assert not {tag for tag, _ in tags_of(page)} & {"script", "b", "i"}


# -- errors ------------------------------------------------------------------------------


def _no_fit_json(run: Path) -> None:
    (run / "fit.json").unlink()


def _fit_json_text(text: str):
    return lambda run: (run / "fit.json").write_text(text)


def _fit_edit(edit):
    return lambda run: rewrite_json(run / "fit.json", edit)


BAD_RUNS = {
    "no fit.json": (_no_fit_json, FileNotFoundError, "no fit.json"),
    "fit.json not JSON": (_fit_json_text("{not json"), ValueError, "invalid JSON"),
    "fit.json a list": (_fit_json_text("[1, 2]"), ValueError, "expected a JSON object"),
    "no gamma": (_fit_edit(lambda f: f.pop("gamma")), ValueError, "'gamma'"),
    "gamma a string": (_fit_edit(lambda f: f.update(gamma="0.1")), ValueError, "'gamma'"),
    "n_changed negative": (_fit_edit(lambda f: f.update(n_changed=-1)), ValueError, "n_changed"),
    "bad curve": (
        _fit_edit(lambda f: f.update(validation_curve={"gamma": [0, 1], "accuracy": [0.5]})),
        ValueError,
        "validation_curve",
    ),
    "no embeddings": (
        lambda run: (run / "embeddings.npy").unlink(),
        FileNotFoundError,
        "no embeddings.npy",
    ),
    "embeddings pickled": (
        lambda run: np.save(run / "embeddings.npy", np.array([{}], dtype=object)),
        ValueError,
        "pickled",
    ),
    "embeddings too short": (
        lambda run: np.save(run / "embeddings.npy", np.ones((5, 16), dtype=np.float32)),
        ValueError,
        "does not match the corpus",
    ),
    "embeddings with NaN": (
        lambda run: np.save(
            run / "embeddings.npy",
            np.where(np.arange(600)[:, None] == 3, np.nan, np.load(run / "embeddings.npy")),
        ),
        ValueError,
        "row 3 contains NaN",
    ),
    "fit.json of another corpus": (
        _fit_edit(lambda f: f.update(n_records=601)),
        ValueError,
        "wrong --dataset",
    ),
    "dataset moved": (
        _fit_edit(lambda f: f.update(dataset="/nonexistent/data")),
        FileNotFoundError,
        "pass the dataset's current location with --dataset",
    ),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_directory_fails_with_a_clear_error(runs, tmp_path, case):
    spoil, error, message = BAD_RUNS[case]
    run = copy_run(runs["nudge-n"], tmp_path / "run")
    spoil(run)
    with pytest.raises(error, match=re.escape(message)):
        write_report(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        write_report(tmp_path / "file")


def test_out_that_is_a_file(runs, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        write_report(runs["nudge-n"].run_dir, tmp_path / "taken")


def test_missing_matplotlib_is_a_clear_error(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="needs matplotlib"):
        write_report(runs["nudge-n"].run_dir, tmp_path)


# -- command line ------------------------------------------------------------------------


def test_cli_writes_the_report(runs, tmp_path):
    result = runner.invoke(
        cli.app, ["report", str(runs["nudge-m"].run_dir), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.stderr
    assert "report →" in result.stderr
    assert (tmp_path / "report.html").is_file()


def test_cli_error_is_one_line_with_exit_code_2(tmp_path):
    result = runner.invoke(cli.app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: run directory")
    assert result.stderr.count("\n") == 1
