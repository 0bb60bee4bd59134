"""The Ray engine on a real local Ray instance (2 CPUs), small Parquet shards.

One Ray session for the module (start-up is the slow part). Results must be identical to
the single-process fit on the same data held as ``corpus.npy``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="the Parquet layout needs pyarrow (nudgekit[scale])")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nudgekit[scale]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")

from nudgekit import NudgeM, NudgeN  # noqa: E402
from nudgekit.engines import EngineSettings, fit  # noqa: E402
from nudgekit.io.parquet import CorpusError, load_parquet_dataset  # noqa: E402
from nudgekit.workflows.fit import fit_dataset  # noqa: E402

from .test_parquet import (  # noqa: E402
    assert_same_fit,
    corrupt_copy,
    fit_error,
    make_datasets,
    reference_fit,
    shard_arrays,
    write_shard,
)


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=150 * 2**20,
            log_to_driver=False,
            configure_logging=False,
        )
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    # 5 shards of 120 rows (row groups of 32): 5 read tasks over 2 CPUs
    return make_datasets(tmp_path_factory.mktemp("data"), shards=5, row_group_rows=32)


def ray_fit(pq_dir, model, **kwargs):
    settings = EngineSettings("ray", quiet=True, block_rows=50, **kwargs)
    return fit(model, load_parquet_dataset(pq_dir), settings)


@pytest.mark.parametrize(("method", "workers"), [(NudgeN, 2), (NudgeM, 1)])
def test_ray_matches_the_in_memory_fit(datasets, method, workers):
    written, pq_dir = datasets
    fitted = ray_fit(pq_dir, method(), workers=workers)
    assert_same_fit(reference_fit(written, method()), written, fitted)
    stats = fitted.pass_stats_
    # Ray Data may coalesce blocks below its minimum block size (1 MiB): ≥ 1 per task
    assert stats["engine"] == "ray" and stats["fragments"] == 5 and stats["blocks"] >= 5
    assert stats["worker_processes"] >= 1 and min(stats["worker_peak_rss_bytes"]) > 0
    # all of the session's 2 CPUs: read and scan fused into one task; fewer: a capped map
    assert stats["fused_read_and_scan"] is (workers == 2)


def test_ray_top_k_and_fixed_gamma(tmp_path):
    written, pq_dir = make_datasets(tmp_path, shards=3, row_group_rows=40, noise=0.9)
    assert_same_fit(
        reference_fit(written, NudgeN(val_k=3)), written, ray_fit(pq_dir, NudgeN(val_k=3))
    )
    assert_same_fit(
        reference_fit(written, NudgeM(gamma=0.2)), written, ray_fit(pq_dir, NudgeM(gamma=0.2))
    )


def test_fit_dataset_on_ray_writes_what_the_local_engine_writes(datasets, tmp_path):
    _, pq_dir = datasets
    on_ray = fit_dataset(pq_dir, tmp_path / "ray", engine=EngineSettings("ray", quiet=True))
    local = fit_dataset(pq_dir, tmp_path / "local")
    for key in ("gamma", "validation_curve", "n_changed", "n_records"):
        assert on_ray[key] == local[key]
    assert on_ray["engine"] == "ray" and "check_ids" in on_ray["timings_s"]
    import pyarrow.parquet as pq

    a, b = (
        pq.read_table(tmp_path / "ray/changed.parquet"),
        pq.read_table(tmp_path / "local/changed.parquet"),
    )
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    np.testing.assert_allclose(
        a.column("vector").combine_chunks().flatten().to_numpy(),
        b.column("vector").combine_chunks().flatten().to_numpy(),
        atol=1e-6,
    )


def test_nan_in_a_shard_is_one_clear_error(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00003.parquet")
    vectors[70, 0] = np.inf
    write_shard(bad / "corpus/part-00003.parquet", ids, vectors)
    message = fit_error(bad, tmp_path, engine="ray")
    assert message == (
        "corpus/part-00003.parquet row 70 (corpus row 430): the vector contains NaN or "
        "infinite values"
    )


def test_wrong_vector_length_is_one_clear_error(datasets, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00004.parquet")
    ragged = [list(v) for v in vectors]
    ragged[100] = ragged[100] + [0.5]
    table = pa.table({"id": ids, "vector": pa.array(ragged, pa.list_(pa.float32()))})
    pq.write_table(table, bad / "corpus/part-00004.parquet")
    assert fit_error(bad, tmp_path, engine="ray") == (
        "corpus/part-00004.parquet row 100 (corpus row 580): the vector has 17 values, expected 16"
    )


def test_duplicate_ids_across_shards_are_found_by_the_distributed_check(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00004.parquet")
    ids[1] = "d7"  # also row 7 of shard 0
    ids[2] = "d599"  # also the last row of this shard: the earlier pair is reported
    write_shard(bad / "corpus/part-00004.parquet", ids, vectors)
    assert fit_error(bad, tmp_path, engine="ray", error=CorpusError) == (
        "duplicate id 'd7': corpus/part-00000.parquet row 7 (corpus row 7) and "
        "corpus/part-00004.parquet row 1 (corpus row 481)"
    )


def test_id_check_with_several_partitions(datasets, tmp_path):
    from nudgekit.engines.ray import check_unique_ids

    _, pq_dir = datasets
    corpus = load_parquet_dataset(pq_dir).corpus
    check_unique_ids(corpus, partitions=3)  # unique: no error
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00002.parquet")
    ids[5] = "d123"
    write_shard(bad / "corpus/part-00002.parquet", ids, vectors)
    with pytest.raises(CorpusError, match="duplicate id 'd123'"):
        check_unique_ids(load_parquet_dataset(bad).corpus, partitions=3)
