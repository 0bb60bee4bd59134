"""`nudgekit quickstart`: the whole product loop on the bundled sample."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from nudgekit.cli import app
from nudgekit.io.dataset import load_dataset
from nudgekit.io.sample import sample_dir
from nudgekit.workflows.apply import rollback_store, store_history

lancedb = pytest.importorskip("lancedb")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from nudgekit.workflows.quickstart import run_quickstart

    return run_quickstart(tmp_path_factory.mktemp("qs"))


def test_quickstart_improves_held_out_retrieval(result):
    record = result["apply"]
    assert record["gamma"] > 0 and record["n_changed"] > 0
    assert record["test_after"]["ndcg@10"] > record["test_before"]["ndcg@10"] + 0.05


def test_quickstart_store_holds_the_sample_with_only_changed_rows_rewritten(result):
    path = result["store"].removeprefix("lancedb:")
    rows = lancedb.connect(path).open_table(result["table"]).to_arrow()
    sample = load_dataset(sample_dir())
    assert rows.num_rows == sample.n_records
    order = np.argsort(rows["id"].to_numpy(zero_copy_only=False))
    after = np.asarray(rows["vector"].to_pylist(), dtype=np.float32)[order]
    before = np.asarray(sample.corpus, dtype=np.float32)[np.argsort(sample.corpus_ids)]
    moved = np.any(np.abs(after - before) > 1e-6, axis=1)
    assert moved.sum() == result["apply"]["n_changed"]


def test_quickstart_shows_queries_whose_top_result_changed(result):
    assert result["examples"]
    first = result["examples"][0]
    assert first["query"] and len(first["before"]) == len(first["after"]) == 3
    assert first["before"][0]["title"] != first["after"][0]["title"]


def test_quickstart_report_says_what_happened_to_the_store_and_how_to_undo_it(result):
    pytest.importorskip("matplotlib")
    page = open(result["report"], encoding="utf-8").read()
    assert "What happened to the store" in page
    assert f"<td>{result['apply']['n_written']:,}</td>" in page
    command = f"nudgekit rollback --store {result['store']} --table {result['table']}"
    assert command in page  # the command the CLI prints, runnable as shown


def test_quickstart_can_be_rolled_back(result):
    assert len(store_history(result["store"], table=result["table"])) == 1
    rollback_store(result["store"], table=result["table"])
    path = result["store"].removeprefix("lancedb:")
    rows = lancedb.connect(path).open_table(result["table"]).to_arrow()
    sample = load_dataset(sample_dir())
    order = np.argsort(rows["id"].to_numpy(zero_copy_only=False))
    restored = np.asarray(rows["vector"].to_pylist(), dtype=np.float32)[order]
    original = np.asarray(sample.corpus, dtype=np.float32)[np.argsort(sample.corpus_ids)]
    np.testing.assert_array_equal(restored, original)


def test_quickstart_cli_prints_before_after_and_how_to_undo(tmp_path):
    done = CliRunner().invoke(app, ["quickstart", "--dir", str(tmp_path / "qs"), "--quiet"])
    assert done.exit_code == 0, done.output
    assert "before" in done.stdout and "after" in done.stdout and "ndcg@10" in done.stdout
    assert "nudgekit rollback --store lancedb:" in done.stdout
