"""Reading the BEIR layout: ids, texts, merged qrels, and errors that name file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nudgekit.io.beir import BeirFormatError, iter_records, read_beir, read_qrels

FIXTURE = Path(__file__).parent / "fixtures" / "beir_tiny"
SHARED_BEIR = Path(__file__).resolve().parents[1].parent / "shared/data/scifact/beir"


@pytest.fixture
def beir(tmp_path) -> Path:
    """A writable copy of the tiny BEIR fixture."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "beir"))


def test_reads_ids_in_file_order_and_merges_all_qrels_files():
    data = read_beir(FIXTURE)
    assert data.corpus_ids == [f"d{i:02d}" for i in range(1, 21)]
    assert data.query_ids == [f"q{i:02d}" for i in range(1, 19)]
    # train.tsv, dev.tsv and test.tsv all end up in one mapping, scores as written
    assert data.qrels["q12"] == {"d14": 1, "d11": 1}  # train
    assert data.qrels["q08"] == {"d10": 1}  # dev
    assert data.qrels["q15"] == {"d17": 2}  # test, graded
    assert data.qrels["q17"] == {"d08": 1, "d09": 0}  # score 0 kept (not relevant)
    assert "q18" not in data.qrels  # a query without judgements
    assert data.n_qrels == 20
    assert len(data.corpus_sha256) == len(data.queries_sha256) == 64


def test_text_is_title_space_text_stripped():
    texts = dict(iter_records(FIXTURE / "corpus.jsonl"))
    assert texts["d01"] == (
        "Boiling eggs Put the eggs in cold water, bring it to a boil and cook them for nine "
        "minutes for a firm yolk."
    )
    assert texts["d10"].startswith("Cast iron")  # empty title: no leading space
    queries = dict(read_beir(FIXTURE).iter_queries())
    assert queries["q01"] == "how long do I boil an egg for a hard yolk"  # no title field


def test_streams_lazily(beir):
    # a broken line late in the file is only met when reading gets there
    with open(beir / "corpus.jsonl", "a") as f:
        f.write("{not json\n")
    records = iter_records(beir / "corpus.jsonl")
    assert next(records)[0] == "d01"
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl:21: invalid JSON"):
        list(records)


def test_tolerated_variations(beir):
    """Blank lines, a byte-order mark, numeric ids, null titles, CRLF, repeated pairs."""
    corpus = beir / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines[0] = json.dumps({"_id": 7, "title": None, "text": "  seven  "})
    corpus.write_bytes(b"\xef\xbb\xbf" + "\n\n".join(lines).encode() + b"\n\n")
    qrels = beir / "qrels" / "dev.tsv"
    rows = [*qrels.read_text().splitlines(), "q13\td15\t1"]  # repeated with the same score
    qrels.write_bytes("\r\n".join(rows).encode() + b"\r\n")
    (beir / "qrels" / "train.tsv").write_text(
        (beir / "qrels" / "train.tsv").read_text().replace("q01\td01", "q01\t7")
    )
    data = read_beir(beir)
    assert data.corpus_ids[0] == "7" and len(data.corpus_ids) == 20
    assert dict(data.iter_corpus())["7"] == "seven"
    assert data.qrels["q13"] == {"d15": 1}
    assert data.qrels["q01"] == {"7": 1}


def test_digest_tracks_content(beir):
    before = read_beir(beir)
    path = beir / "corpus.jsonl"
    path.write_text(path.read_text().replace("nine minutes", "ten minutes"))
    after = read_beir(beir)
    assert after.corpus_ids == before.corpus_ids
    assert after.corpus_sha256 != before.corpus_sha256
    assert after.queries_sha256 == before.queries_sha256


def _replace_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


JSONL_ERRORS = [
    ("corpus.jsonl", 3, '{"_id": "x", "text": "a"', r"corpus\.jsonl:3: invalid JSON"),
    ("corpus.jsonl", 2, '["d02", "text"]', r"corpus\.jsonl:2: expected a JSON object, got list"),
    ("corpus.jsonl", 4, '{"title": "t", "text": "a"}', r"corpus\.jsonl:4: no '_id' field"),
    ("corpus.jsonl", 4, '{"_id": "", "text": "a"}', r"corpus\.jsonl:4: '_id' must be a non-empty"),
    ("corpus.jsonl", 5, '{"_id": "d05", "title": "t"}', r"jsonl:5: record 'd05' has no 'text'"),
    ("corpus.jsonl", 6, '{"_id": "d06", "text": 3}', r"jsonl:6: 'text' of record 'd06' must be a"),
    ("corpus.jsonl", 6, '{"_id": "d06", "title": [], "text": ""}', r"jsonl:6: 'title' of record"),
    (
        "corpus.jsonl",
        9,
        '{"_id": "d03", "text": "b"}',
        r"jsonl:9: duplicate _id 'd03' \(first at line 3",
    ),
    (
        "queries.jsonl",
        18,
        '{"_id": "q01", "text": "b"}',
        r"jsonl:18: duplicate _id 'q01' \(first at",
    ),
    ("queries.jsonl", 2, "{'_id': 'q02'}", r"queries\.jsonl:2: invalid JSON"),
]


@pytest.mark.parametrize(("name", "line_no", "text", "message"), JSONL_ERRORS)
def test_jsonl_errors_name_file_and_line(beir, name, line_no, text, message):
    _replace_line(beir / name, line_no, text)
    with pytest.raises(BeirFormatError, match=message):
        read_beir(beir)


def test_non_utf8_line(beir):
    with open(beir / "queries.jsonl", "ab") as f:
        f.write(b'{"_id": "q99", "text": "caf\xe9"}\n')
    with pytest.raises(BeirFormatError, match=r"queries\.jsonl:19: not UTF-8"):
        read_beir(beir)


CONFLICT = (
    r"train\.tsv:2: query 'q01', document 'd01' has score 1, but .*test\.tsv:2 gave it score 2"
)
QRELS_ERRORS = [
    ("test.tsv", 1, "qid\tdocid\tscore", r"test\.tsv:1: expected the header"),
    ("test.tsv", 2, "q14\tnope\t1", r"test\.tsv:2: corpus id 'nope' is not in corpus\.jsonl"),
    ("dev.tsv", 3, "q99\td15\t1", r"dev\.tsv:3: query id 'q99' is not in queries\.jsonl"),
    ("test.tsv", 3, "q15\td17\t1.5", r"test\.tsv:3: score must be an integer, got '1\.5'"),
    ("test.tsv", 3, "q15 d17 1", r"test\.tsv:3: expected 3 tab-separated fields"),
    ("test.tsv", 4, "q16\td20\t1\textra", r"test\.tsv:4: expected 3 tab-separated fields"),
    ("test.tsv", 2, "q01\td01\t2", CONFLICT),  # train.tsv:2 gives this pair score 1
]


@pytest.mark.parametrize(("name", "line_no", "text", "message"), QRELS_ERRORS)
def test_qrels_errors_name_file_and_line(beir, name, line_no, text, message):
    _replace_line(beir / "qrels" / name, line_no, text)
    with pytest.raises(BeirFormatError, match=message):
        read_beir(beir)


def test_qrels_without_id_checks_accepts_any_ids(beir):
    _replace_line(beir / "qrels" / "test.tsv", 2, "q14\tnope\t1")
    assert read_qrels(beir / "qrels")["q14"] == {"nope": 1}


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("corpus.jsonl", r"corpus\.jsonl does not exist"),
        ("queries.jsonl", r"queries\.jsonl does not exist"),
        ("qrels", r"qrels directory .* does not exist"),
        ("qrels/*", r"no qrels files"),
    ],
)
def test_missing_files(beir, remove, message):
    for path in beir.glob(remove):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(FileNotFoundError, match=message):
        read_beir(beir)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"BEIR directory .* does not exist"):
        read_beir(tmp_path / "nowhere")


def test_errors_are_value_errors():
    # the CLI turns ValueError into one line and exit code 2
    assert issubclass(BeirFormatError, ValueError)


def test_shared_scifact_reads_cleanly():
    if not (SHARED_BEIR / "corpus.jsonl").exists():
        pytest.skip("shared SciFact data not present (../shared/data/scifact/beir)")
    data = read_beir(SHARED_BEIR)
    assert (len(data.corpus_ids), len(data.query_ids), data.n_qrels) == (5183, 1109, 1258)
