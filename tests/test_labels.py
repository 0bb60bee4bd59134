"""``nudgekit labels`` and ``apply``/``fit --queries``: from what users have to a better store.

Each input kind — BEIR files, pair tables (CSV, TSV, JSONL), a click log, a LlamaIndex
dataset — is built from the bundled sample's texts, turned into labels with the offline
all-MiniLM-L6-v2 model, and applied to a LanceDB table of the sample: test NDCG@10 must
improve. On the shared SciFact (when present), labels from its BEIR files reproduce the
shared embedded layout and ``apply`` lands within 0.005 of ``fit``.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nudgekit.cli import app
from nudgekit.io.label_inputs import EventRule, LabelInputError, read_label_input
from nudgekit.io.sample import sample_dir
from nudgekit.workflows.apply import apply_to_store
from nudgekit.workflows.labels import build_labels

pytest.importorskip("sentence_transformers", reason="labels embed queries (nudgekit[embed])")
lancedb = pytest.importorskip("lancedb")
pa = pytest.importorskip("pyarrow")

MODEL = "all-MiniLM-L6-v2"
SAMPLE = sample_dir()
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
runner = CliRunner()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


QUERIES = {r["_id"]: r["text"] for r in jsonl(SAMPLE / "texts" / "queries.jsonl")}
QRELS = json.loads((SAMPLE / "qrels.json").read_text())
SPLITS = json.loads((SAMPLE / "splits.json").read_text())


def lance_table(root: Path, corpus: np.ndarray, ids: list[str], table: str = "docs") -> str:
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(corpus, np.float32).ravel()), corpus.shape[1]
    )
    db = lancedb.connect(str(root))
    db.create_table(table, pa.table({"id": ids, "vector": vectors, "note": ids}))
    return f"lancedb:{root}"


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("store")
    corpus = np.load(SAMPLE / "corpus.npy")
    ids = json.loads((SAMPLE / "corpus_ids.json").read_text())
    return lance_table(root / "template", corpus, ids), root / "template"


@pytest.fixture
def store(sample_store, tmp_path) -> str:
    import shutil

    shutil.copytree(sample_store[1], tmp_path / "db")
    return f"lancedb:{tmp_path / 'db'}"


def improves(store: str, labels: Path) -> dict:
    report = apply_to_store(store, labels, table="docs", metric="cosine")
    assert report["test_after"]["ndcg@10"] > report["test_before"]["ndcg@10"] + 0.02, report
    return report


# -- each input kind --------------------------------------------------------------------------
def write_beir(root: Path) -> Path:
    root.mkdir(parents=True)
    with open(root / "queries.jsonl", "w") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir()
    for split, name in (("train", "train"), ("val", "dev"), ("test", "test")):
        with open(root / "qrels" / f"{name}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid in SPLITS[split]:
                for doc, grade in QRELS[qid].items():
                    f.write(f"{qid}\t{doc}\t{grade}\n")
    return root


def test_beir_files_keep_their_split_names(store, tmp_path):
    beir = write_beir(tmp_path / "beir")
    meta = build_labels(tmp_path / "labels", beir / "queries.jsonl", beir / "qrels", model=MODEL)
    splits = json.loads((tmp_path / "labels" / "splits.json").read_text())
    assert meta["split_by"] == "file"
    assert {k: sorted(v) for k, v in splits.items()} == {k: sorted(v) for k, v in SPLITS.items()}
    # the same texts and model give the sample's own query vectors
    ids = json.loads((tmp_path / "labels" / "query_ids.json").read_text())
    ref_ids = json.loads((SAMPLE / "query_ids.json").read_text())
    ref = np.load(SAMPLE / "queries.npy")[[ref_ids.index(i) for i in ids]]
    np.testing.assert_allclose(np.load(tmp_path / "labels" / "queries.npy"), ref, atol=1e-5)
    improves(store, tmp_path / "labels")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_pair_tables_with_query_texts(store, tmp_path, suffix):
    rows = [(QUERIES[q], doc, grade) for q, docs in QRELS.items() for doc, grade in docs.items()]
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps({"query": q, "doc_id": d, "grade": g}) + "\n" for q, d, g in rows)
        )
    else:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writerow(["question", "document_id", "relevance"])
            writer.writerows(rows)
    meta = build_labels(tmp_path / "labels", path, model=MODEL, store=store, table="docs")
    assert meta["n_queries"] == len(QRELS) and meta["split_by"] == "random"
    improves(store, tmp_path / "labels")


def click_log(path: Path, *, seed: int = 0) -> Path:
    """Clicks on the answers (and some noise), thumbs-down on wrong ones, over 30 days."""
    rng = random.Random(seed)
    docs = json.loads((SAMPLE / "corpus_ids.json").read_text())
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "query", "doc_id", "event"])
        for qid in sorted(QRELS):
            day = rng.uniform(0, 30)
            for doc in QRELS[qid]:
                for _ in range(rng.randint(1, 3)):
                    writer.writerow(
                        [f"2026-11-{1 + int(day):02d}T10:00:00Z", QUERIES[qid], doc, "click"]
                    )
            if rng.random() < 0.3:  # a mis-click the user then marked as wrong
                wrong = rng.choice(docs)
                if wrong not in QRELS[qid]:
                    writer.writerow(
                        [f"2026-11-{1 + int(day):02d}T10:01:00Z", QUERIES[qid], wrong, "click"]
                    )
                    writer.writerow(
                        [
                            f"2026-11-{1 + int(day):02d}T10:02:00Z",
                            QUERIES[qid],
                            wrong,
                            "thumbs_down",
                        ]
                    )
    return path


def test_a_click_log_with_a_time_split(store, tmp_path):
    log = click_log(tmp_path / "clicks.csv")
    texts = read_label_input(log)
    assert all(grade >= 1 for docs in texts.qrels.values() for grade in docs.values())
    answers: dict[str, set[str]] = {}
    for qid, docs in QRELS.items():
        answers.setdefault(QUERIES[qid], set()).update(docs)
    wrong = [q for q, docs in texts.qrels.items() if set(docs) - answers[texts.queries[q]]]
    assert not wrong  # every thumbs-down document is never relevant
    meta = build_labels(tmp_path / "labels", log, model=MODEL, split_by="time")
    splits = json.loads((tmp_path / "labels" / "splits.json").read_text())
    newest_train = max(texts.first_seen[q] for q in splits["train"])
    assert min(texts.first_seen[q] for q in splits["test"]) >= newest_train
    assert meta["source"]["rule"].startswith("sum of event weights")
    improves(store, tmp_path / "labels")


def test_the_event_rule_is_overridable_and_unknown_events_are_refused(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("query,doc_id,event\nq one,d1,click\nq one,d1,purchase\nq two,d2,view\n")
    with pytest.raises(LabelInputError, match=r"log.csv:3: event 'purchase' is not in the rule"):
        read_label_input(log)
    rule = EventRule.parse(["purchase=5", "view=never"])
    texts = read_label_input(log, events=rule)
    assert list(texts.qrels.values()) == [{"d1": 6.0}]  # click 1 + purchase 5; view vetoes d2


def test_a_llama_index_dataset_json(store, tmp_path):
    corpus = {r["_id"]: r["title"] for r in jsonl(SAMPLE / "texts" / "corpus.jsonl")}
    dataset = {
        "queries": QUERIES,
        "corpus": corpus,
        "relevant_docs": {q: list(docs) for q, docs in QRELS.items()},
        "mode": "text",
    }
    path = tmp_path / "train_dataset.json"
    path.write_text(json.dumps(dataset, indent=4))
    build_labels(tmp_path / "labels", path, model=MODEL, store=store, table="docs")
    improves(store, tmp_path / "labels")


# -- the store is checked first ---------------------------------------------------------------
def pairs_file(path: Path, extra: list[tuple[str, str]] = ()) -> Path:
    rows = [(QUERIES[q], d) for q in list(QRELS)[:200] for d in QRELS[q]] + list(extra)
    path.write_text("query,doc_id\n" + "".join(f'"{q}",{d}\n' for q, d in rows))
    return path


def test_documents_the_store_lacks_are_refused_or_dropped(store, tmp_path):
    path = pairs_file(tmp_path / "p.csv", [("what is a ghost", "ghost-doc")])
    with pytest.raises(
        LabelInputError, match=r"1 label\(s\) name documents that are not in .*'ghost-doc'"
    ):
        build_labels(tmp_path / "labels", path, model=MODEL, store=store, table="docs")
    assert not (tmp_path / "labels").exists()
    meta = build_labels(
        tmp_path / "labels", path, model=MODEL, store=store, table="docs", drop_unknown=True
    )
    assert meta["n_dropped_labels"] == 1


def test_a_store_of_another_dimension_is_refused(tmp_path):
    other = lance_table(tmp_path / "db", np.eye(8, dtype=np.float32), [f"d{i}" for i in range(8)])
    path = tmp_path / "p.csv"
    path.write_text("query,doc_id\nhello,d1\nworld,d2\n")
    with pytest.raises(ValueError, match=r"embeds in 384 dimensions but .* holds vectors of 8"):
        build_labels(tmp_path / "labels", path, model=MODEL, store=other, table="docs")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "query,doc_id\nhello,\n", r"a.csv:2: no document id"),
        (
            "b.jsonl",
            '{"query": "x", "doc_id": "d1", "grade": 1e400}\n',
            r"b.jsonl:1: the grade must be a finite number",
        ),
        ("c.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", r"c.jsonl:1: not a JSON object"),
        ("d.csv", "question\nhello\n", "no document column"),
        ("e.json", '{"queries": {"q": "x"}}', "expected a LlamaIndex EmbeddingQAFinetuneDataset"),
        ("f.csv", b"query,doc_id\n\xff\xfe,d1\n", "f.csv: not UTF-8 text"),
        (
            "g.json",
            '{"queries": {"q": "x"}, "relevant_docs": {"q": [null]}}',
            r"relevant_docs\['q'\] must be a list of doc ids",
        ),
    ],
)
def test_malformed_inputs_are_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = runner.invoke(
        app, ["labels", str(tmp_path / "out"), "--queries", str(path), "--model", MODEL]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pytest.importorskip("re").search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


# -- one command -------------------------------------------------------------------------------
def test_apply_takes_the_texts_directly(store, tmp_path):
    path = pairs_file(tmp_path / "p.csv")
    result = runner.invoke(
        app,
        [
            "apply",
            "--store",
            store,
            "--table",
            "docs",
            "--queries",
            str(path),
            "--model",
            MODEL,
            "--metric",
            "cosine",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "nudge-cv: γ =" in result.stdout and "wrote" in result.stdout


def test_fit_takes_a_labels_folder_or_the_texts(tmp_path):
    path = pairs_file(tmp_path / "p.csv")
    result = runner.invoke(
        app,
        [
            "fit",
            str(SAMPLE),
            "--queries",
            str(path),
            "--model",
            MODEL,
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    fit = json.loads((tmp_path / "run" / "fit.json").read_text())
    assert fit["n_changed"] > 0 and fit["labels_source"].endswith("p.csv")


def test_split_writes_splits_for_a_labels_folder(store, tmp_path):
    build_labels(tmp_path / "labels", pairs_file(tmp_path / "p.csv"), model=MODEL)
    (tmp_path / "labels" / "splits.json").unlink()
    result = runner.invoke(app, ["split", str(tmp_path / "labels"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "labels" / "splits.json").read_text())
    assert sum(len(v) for v in splits.values()) == 200


# -- the real data -----------------------------------------------------------------------------
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="the shared SciFact data is not here")
def test_scifact_from_beir_files_matches_fit_on_the_embedded_layout(tmp_path):
    from nudgekit.workflows.evaluate import evaluate_dataset
    from nudgekit.workflows.fit import fit_dataset

    minilm = SCIFACT / "minilm"
    ids = json.loads((minilm / "corpus_ids.json").read_text())
    store = lance_table(tmp_path / "db", np.load(minilm / "corpus.npy"), ids)
    beir = SCIFACT / "beir"
    build_labels(
        tmp_path / "labels",
        beir / "queries.jsonl",
        beir / "qrels",
        model=MODEL,
        store=store,
        table="docs",
        split_by="random",
    )
    report = apply_to_store(store, tmp_path / "labels", table="docs", metric="cosine")
    fit = fit_dataset(minilm, tmp_path / "run")
    reference = evaluate_dataset(minilm, embeddings=fit["embeddings"])
    assert report["test_after"]["ndcg@10"] == pytest.approx(reference["ndcg@10"], abs=0.005)
    assert report["test_after"]["ndcg@10"] > report["test_before"]["ndcg@10"] + 0.1
