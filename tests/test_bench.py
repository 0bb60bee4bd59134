"""`nudgekit bench`: methods side by side on the same splits, failures reported."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from nudgekit.cli import app
from nudgekit.workflows.bench import PeakMemory, bench_markdown, run_bench

from .test_dataset import write_dataset


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data").root


def test_bench_scores_every_method_on_the_test_split(dataset):
    result = run_bench(dataset, ["none", "nudge-n", "nudge-m"])
    rows = {row["method"]: row for row in result["methods"]}
    assert all(row["status"] == "ok" for row in rows.values())
    assert rows["none"]["gamma"] is None
    assert rows["nudge-m"]["gamma"] > 0
    assert rows["nudge-m"]["test"]["ndcg@10"] > rows["none"]["test"]["ndcg@10"]
    for row in rows.values():
        assert row["fit_s"] >= 0 and row["peak_mb"] >= 0
        assert set(row["test"]) >= {"r_cap@1", "r_cap@10", "ndcg@10", "recall@10", "mrr@10"}


def test_a_failing_method_is_reported_and_the_others_still_run(dataset):
    result = run_bench(dataset, ["bogus", "none"])
    bogus, none = result["methods"]
    assert bogus["status"] == "failed" and "unknown method 'bogus'" in bogus["error"]
    assert none["status"] == "ok"
    assert "failed: ValueError" in bench_markdown(result)


def test_ood_bench_reports_in_and_out_of_distribution_separately(dataset):
    result = run_bench(dataset, ["none", "nudge-n"], ood=True)
    assert set(result["n_test"]) == {"in", "out"}
    for row in result["methods"]:
        assert "ndcg@10" in row["in"] and "ndcg@10" in row["out"]
    table = bench_markdown(result)
    assert "NDCG@10 (in)" in table and "NDCG@10 (out)" in table


def test_bench_cli_writes_json_and_markdown(dataset, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", str(dataset), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bench.json").read_text())
    assert [row["method"] for row in saved["methods"]] == ["none", "nudge-m", "nudge-n", "nudge-cv"]
    assert (out / "bench.md").read_text() in result.stdout


def test_bench_cli_exits_non_zero_when_a_method_fails(dataset):
    result = CliRunner().invoke(app, ["bench", str(dataset), "--methods", "none,bogus", "-q"])
    assert result.exit_code == 1
    assert "failed" in result.stdout


def test_method_parameters_reach_the_method_and_the_record(dataset, tmp_path):
    result = run_bench(dataset, ["nudge-n", "nudge-m"], params={"nudge-n": {"gamma": 0.1}})
    rows = {row["method"]: row for row in result["methods"]}
    assert rows["nudge-n"]["gamma"] == 0.1 and rows["nudge-m"]["gamma"] != 0.1
    assert result["params"] == {"nudge-n": {"gamma": 0.1}}

    out = tmp_path / "bench"
    cli = CliRunner().invoke(
        app, ["bench", str(dataset), "--methods", "nudge-n", "--param", "nudge-n.gamma=0.2",
              "--param", "nudge-n.val_k=3", "--out", str(out), "-q"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    saved = json.loads((out / "bench.json").read_text())
    assert saved["params"] == {"nudge-n": {"gamma": 0.2, "val_k": 3}}
    assert saved["methods"][0]["gamma"] == 0.2


@pytest.mark.parametrize(
    ("param", "message"),
    [
        (
            "nudge-n.gama=0.1",
            "nudge-n has no parameter 'gama' (it has: gamma, val_k, gammas, device, "
            "block_rows, query_block, block_elements)",
        ),
        ("adaptor.lr=0.1", "parameters for 'adaptor', which is not among the methods"),
        ("nudge-n=0.1", "expected METHOD.NAME=VALUE"),
    ],
)
def test_bad_method_parameters_are_refused_before_anything_runs(dataset, param, message):
    result = CliRunner().invoke(
        app, ["bench", str(dataset), "--methods", "none,nudge-n", "--param", param]
    )
    assert result.exit_code == 2
    assert message in result.output


def test_a_hybrid_reuses_the_fit_of_its_first_part_run_alone(dataset):
    pytest.importorskip("torch")
    quick = {"max_steps": 30, "eval_every": 10}
    both = run_bench(
        dataset,
        ["adaptor", "adaptor+nudge-n"],
        params={"adaptor": quick, "adaptor+nudge-n": {"first": quick}},
    )
    alone = run_bench(dataset, ["adaptor+nudge-n"], params={"adaptor+nudge-n": {"first": quick}})
    adaptor, reused = both["methods"]
    fresh = alone["methods"][0]
    assert reused["reused"] == "adaptor" and "reused" not in fresh
    assert reused["test"] == fresh["test"] and reused["gamma"] == fresh["gamma"]
    assert reused["fit_s"] >= adaptor["fit_s"]
    assert "adaptor+nudge-n (reuses the adaptor fit above)" in bench_markdown(both)
    # other parameters for the first part: no reuse
    other = run_bench(
        dataset, ["adaptor", "adaptor+nudge-n"],
        params={"adaptor": quick, "adaptor+nudge-n": {"first": {**quick, "seed": 1}}},
    )  # fmt: skip
    assert "reused" not in other["methods"][1]


def test_peak_memory_sees_an_allocation_made_inside():
    with PeakMemory(interval_s=0.005) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MB
        time.sleep(0.1)  # long enough for the sampler, whatever the load
        del block
    assert memory.peak_mb > 32
