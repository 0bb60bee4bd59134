"""The ``nudgekit`` command line: fit and eval on an embedded dataset directory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import nudgekit
import nudgekit.cli as cli
import nudgekit.cli._app as cli_app
from nudgekit import NudgeM, NudgeN
from nudgekit.evaluation.metrics import retrieval_metrics
from nudgekit.evaluation.retrieval import search
from nudgekit.io.dataset import load_dataset

from .test_dataset import Written, write_dataset

METHODS = {"nudge-n": NudgeN, "nudge-m": NudgeM}
EVAL_KEYS = {"ndcg@10", "recall@10", "r_cap@10", "mrr@10", "map@100", "accuracy@1"}
PROGRESS_PHASES = ("scan corpus", "write embeddings", "search")

runner = CliRunner()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    """One dataset for the tests that only read it."""
    return write_dataset(tmp_path_factory.mktemp("data"))


@dataclass
class Fitted:
    method: str
    out: Path
    report: dict

    @property
    def embeddings(self) -> np.ndarray:
        return np.load(self.out / "embeddings.npy")


@pytest.fixture(scope="module", params=list(METHODS))
def fitted(request, written, tmp_path_factory) -> Fitted:
    """``nudgekit fit`` with each method and default options, run once per module."""
    out = tmp_path_factory.mktemp("out")
    report = fit_ok(written, out, "--method", request.param)
    return Fitted(request.param, out, report)


def invoke(*args: str | Path):
    return runner.invoke(cli.app, [str(a) for a in args])


def fit_ok(written: Written, out: Path, *options: str | Path) -> dict:
    result = invoke("fit", written.root, "--out", out, *options)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "fit.json").read_text())


def eval_json(written: Written, *options: str | Path) -> dict:
    result = invoke("eval", written.root, "--json", *options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def python_fit(written: Written, method: str, **params):
    """The same fit through the Python API, from the problem's own arrays and lists."""
    p = written.problem
    model = METHODS[method](**params)
    if params.get("gamma") is None:
        model.fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)
    else:
        model.fit(p.corpus, p.train_q, p.train_rel)
    return model


def normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scores_of(written: Written, corpus: np.ndarray, k: int = 10) -> dict:
    """Metrics of exact inner-product search of the test queries over ``corpus``."""
    test = load_dataset(written.root).split("test")
    _, indices = search(test.queries, corpus, 100)
    return retrieval_metrics(indices, test.relevance, ks=sorted({1, k, 100}))


def console_script() -> Path:
    script = Path(sys.executable).parent / "nudgekit"
    if not script.exists():
        pytest.skip("the nudgekit console script is not installed next to this Python")
    return script


def run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with stdout and stderr piped (not a terminal)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE")
    }
    return subprocess.run(
        [str(console_script()), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# -- fit ---------------------------------------------------------------------------------


def test_fit_writes_float32_embeddings_of_corpus_shape(written, fitted):
    emb = fitted.embeddings
    assert emb.dtype == np.float32
    assert emb.shape == written.problem.corpus.shape


def test_fit_embeddings_equal_python_api_in_corpus_order(written, fitted):
    model = python_fit(written, fitted.method)
    assert fitted.report["gamma"] == model.gamma_
    np.testing.assert_allclose(
        fitted.embeddings, model.transform(written.problem.corpus), rtol=0, atol=1e-6
    )


def test_fit_unchanged_rows_equal_the_normalised_input(written, fitted):
    same = np.isclose(fitted.embeddings, normalised(written.problem.corpus), rtol=0, atol=1e-6).all(
        axis=1
    )
    assert fitted.report["n_changed"] > 0
    assert (~same).sum() == fitted.report["n_changed"]
    # only records that some training query points to may move
    answering = {i for rows in written.problem.train_rel for i in rows}
    assert set(np.flatnonzero(~same).tolist()) <= answering


def test_fit_json_reports_method_gamma_curve_changes_timings_versions(written, fitted):
    report = fitted.report
    assert report == json.loads((fitted.out / "fit.json").read_text())
    assert report["method"] == fitted.method
    assert report["gamma"] > 0
    assert report["gamma_searched"] is True
    curve = report["validation_curve"]
    assert set(curve) == {"gamma", "accuracy"}
    assert len(curve["gamma"]) == len(curve["accuracy"]) > 1
    assert all(0 <= a <= 1 for a in curve["accuracy"])
    assert isinstance(report["n_changed"], int)
    assert (report["n_records"], report["dim"]) == written.problem.corpus.shape
    timings = report["timings_s"]
    assert {"load", "write", "total"} <= set(timings)
    assert all(t >= 0 for t in timings.values())
    assert report["versions"]["nudgekit"] == nudgekit.__version__
    assert {"numpy", "python"} <= set(report["versions"])


def test_nudge_n_report_records_val_k(written, tmp_path):
    report = fit_ok(written, tmp_path / "out", "--method", "nudge-n", "--val-k", "3")
    assert report["val_k"] == 3
    assert report["gamma"] == python_fit(written, "nudge-n", val_k=3).gamma_


def test_fit_creates_a_missing_nested_out_dir(written, tmp_path):
    out = tmp_path / "a" / "b" / "out"
    fit_ok(written, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "changed_rows.npy",
        "embeddings.npy",
        "fit.json",
    ]


@pytest.mark.parametrize("method", METHODS)
def test_fixed_gamma_skips_the_search_and_matches_python_api(written, tmp_path, method):
    report = fit_ok(written, tmp_path / "out", "--method", method, "--gamma", "0.1")
    assert report["gamma"] == 0.1
    assert report["gamma_searched"] is False
    assert report["validation_curve"] is None
    assert report["validation_accuracy"] is None
    assert report["n_val_queries"] == 0
    emb = np.load(tmp_path / "out" / "embeddings.npy")
    model = python_fit(written, method, gamma=0.1)
    np.testing.assert_allclose(emb, model.transform(written.problem.corpus), rtol=0, atol=1e-6)


def test_fixed_gamma_needs_no_val_split(tmp_path):
    fresh = write_dataset(tmp_path / "data")
    (fresh.root / "splits.json").write_text(
        json.dumps({"train": fresh.splits["train"], "test": fresh.splits["test"]})
    )
    report = fit_ok(fresh, tmp_path / "out", "--gamma", "0.1")
    assert report["n_changed"] > 0


def test_gamma_zero_gives_the_normalised_corpus(written, tmp_path):
    report = fit_ok(written, tmp_path / "out", "--method", "nudge-m", "--gamma", "0")
    emb = np.load(tmp_path / "out" / "embeddings.npy")
    assert report["n_changed"] == 0
    np.testing.assert_allclose(emb, normalised(written.problem.corpus), rtol=0, atol=1e-6)


# -- eval --------------------------------------------------------------------------------


def test_eval_json_prints_one_json_object_with_the_standard_metrics(written):
    result = invoke("eval", written.root, "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    assert isinstance(metrics, dict)
    assert EVAL_KEYS <= set(metrics)
    assert metrics["split"] == "test"
    assert metrics["n_queries"] == len(written.splits["test"])


def test_eval_without_embeddings_scores_the_raw_corpus(written):
    metrics = eval_json(written)
    assert metrics["embeddings"] is None
    expected = scores_of(written, written.problem.corpus)
    for key in EVAL_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-12)


def test_fit_then_eval_scores_the_written_embeddings(written, fitted):
    path = fitted.out / "embeddings.npy"
    metrics = eval_json(written, "--embeddings", path)
    assert metrics["embeddings"] == str(path)
    expected = scores_of(written, np.load(path))
    for key in EVAL_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-12)


def test_nudge_improves_test_ndcg_over_the_raw_corpus(written, fitted):
    raw = eval_json(written)["ndcg@10"]
    tuned = eval_json(written, "--embeddings", fitted.out / "embeddings.npy")["ndcg@10"]
    assert tuned > raw + 0.05


def test_nudge_m_improves_test_ndcg_over_the_normalised_corpus(written, tmp_path):
    """Not only the normalisation: moving the records helps the held-out queries."""
    fit_ok(written, tmp_path / "out", "--method", "nudge-m")
    np.save(tmp_path / "unit.npy", normalised(written.problem.corpus).astype(np.float32))
    unit = eval_json(written, "--embeddings", tmp_path / "unit.npy")["ndcg@10"]
    tuned = eval_json(written, "--embeddings", tmp_path / "out" / "embeddings.npy")["ndcg@10"]
    assert tuned > unit + 0.02


def test_eval_split_and_k_options(written):
    metrics = eval_json(written, "--split", "val", "--k", "5")
    assert metrics["split"] == "val"
    assert metrics["n_queries"] == len(written.splits["val"])
    assert {"ndcg@5", "recall@5", "mrr@5", "map@100", "accuracy@1"} <= set(metrics)
    assert "ndcg@10" not in metrics


def test_eval_without_json_prints_a_table(written):
    result = invoke("eval", written.root)
    assert result.exit_code == 0, result.stderr
    assert "ndcg@10" in result.stdout
    assert "raw corpus" in result.stdout


# -- progress output ---------------------------------------------------------------------


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """Make the CLI's stderr console believe it writes to a terminal; return its text."""
    buffer = io.StringIO()
    monkeypatch.setattr(cli_app, "err", Console(file=buffer, force_terminal=True, width=200))
    return buffer


def test_terminal_shows_progress_without_quiet(written, tmp_path, terminal):
    fit_ok(written, tmp_path / "out")
    assert "scan corpus" in terminal.getvalue()
    assert "records changed" in terminal.getvalue()


@pytest.mark.parametrize("command", ["fit", "eval"])
def test_quiet_prints_nothing_on_stderr_even_on_a_terminal(written, tmp_path, terminal, command):
    args = ["--out", tmp_path / "out"] if command == "fit" else ["--json"]
    result = invoke(command, written.root, *args, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert terminal.getvalue() == ""
    assert result.stderr == ""


def test_piped_fit_prints_no_progress_only_the_summary(written, tmp_path):
    done = run_script("fit", written.root, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "records changed" in done.stderr
    assert "\x1b" not in done.stderr
    assert not any(phase in done.stderr for phase in PROGRESS_PHASES)
    assert (tmp_path / "out" / "embeddings.npy").is_file()


def test_piped_quiet_fit_prints_nothing(written, tmp_path):
    done = run_script("fit", written.root, "--out", tmp_path / "out", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    assert (tmp_path / "out" / "fit.json").is_file()


def test_piped_eval_json_is_one_parseable_line_and_nothing_else(written):
    done = run_script("eval", written.root, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) == 1
    assert EVAL_KEYS <= set(json.loads(done.stdout))


def test_help_lists_both_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "fit" in result.stdout and "eval" in result.stdout


# -- device ------------------------------------------------------------------------------


def test_device_torch_gives_the_same_result_as_the_default(written, fitted, tmp_path):
    pytest.importorskip("torch")
    torch = fit_ok(written, tmp_path / "torch", "--method", fitted.method, "--device", "torch")
    assert torch["device"] == "torch"
    assert torch["gamma"] == pytest.approx(fitted.report["gamma"], rel=1e-5)
    assert torch["n_changed"] == fitted.report["n_changed"]
    np.testing.assert_allclose(
        np.load(tmp_path / "torch" / "embeddings.npy"), fitted.embeddings, rtol=0, atol=1e-5
    )


# -- the command line as a newcomer meets it --------------------------------------------------
def test_version_prints_the_package_version():
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"nudgekit {nudgekit.__version__}"


def test_help_lists_the_main_job_first():
    listed = runner.invoke(cli.app, ["--help"]).stdout
    order = [listed.index(name) for name in ("quickstart", "apply", "labels", "fit", "bench")]
    assert order == sorted(order)


def test_demo_with_out_writes_its_runs(tmp_path):
    # --out once shadowed the console the command prints with
    result = runner.invoke(cli.app, ["demo", "--out", str(tmp_path / "d"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "nudge-n" / "fit.json").is_file()
    assert "ndcg@10" in result.stdout


def test_quickstart_with_an_unknown_method_creates_nothing(tmp_path):
    result = runner.invoke(cli.app, ["quickstart", "--dir", str(tmp_path / "q"), "--method", "foo"])
    assert result.exit_code == 2 and "unknown method 'foo'" in result.stderr
    assert not (tmp_path / "q").exists()


def test_bench_list_needs_no_dataset():
    result = runner.invoke(cli.app, ["bench", "--list"])
    assert result.exit_code == 0 and "nudge-n" in result.stdout and "adaptor" in result.stdout


def test_every_extra_is_installable_by_one_name():
    import tomllib

    extras = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())[
        "project"
    ]["optional-dependencies"]
    listed = extras["all"][0]
    for name in ("stores", "report", "scale", "embed"):
        assert name in listed
