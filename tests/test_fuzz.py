"""The standing fuzz suite: bad inputs and faults, each a clean failure that writes nothing.

Every case breaks one thing — a file of the bundled sample, an option, the output
location, a store — and runs one command. Each must exit non-zero with exactly one line on
stderr (``error: ...``) naming the problem, no traceback, and leave the output location and
the store as they were. Then ``fit`` is killed with SIGKILL at random moments (a bounded
loop): its output folder is always the complete old run or the complete new one; and two
fits race into one folder. (Killed and racing ``apply`` runs: tests/test_apply_crash.py and
tests/test_store_races.py.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nudgekit.cli import app
from nudgekit.io.sample import sample_dir

runner = CliRunner()
SAMPLE = sample_dir()
CLI = "from nudgekit.cli import main; main()"


@dataclass
class World:
    """One case's inputs: a copy of the sample dataset, its labels, a LanceDB store."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def store(self) -> str:
        return f"lancedb:{self.root / 'db'}"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def edit_json(
        self, name: str, change: Callable[[object], object], where: Path | None = None
    ) -> None:
        path = (where or self.data) / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))


def make_world(root: Path, with_store: bool) -> World:
    world = World(root)
    shutil.copytree(SAMPLE, world.data, ignore=shutil.ignore_patterns("texts"))
    world.labels.mkdir()
    for name in ("queries.npy", "query_ids.json", "qrels.json", "splits.json", "embed_meta.json"):
        shutil.copyfile(SAMPLE / name, world.labels / name)
    if with_store:
        import lancedb
        import pyarrow as pa

        corpus = np.load(SAMPLE / "corpus.npy")
        ids = json.loads((SAMPLE / "corpus_ids.json").read_text())
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(corpus.ravel()), corpus.shape[1])
        lancedb.connect(str(root / "db")).create_table(
            "docs", pa.table({"id": ids, "vector": vectors})
        )
    return world


def corrupt_npy(world: World, name: str, array: np.ndarray) -> None:
    np.save(world.data / name, array, allow_pickle=True)


def row_of(world: World, fill: float, row: int = 7) -> None:
    corpus = np.load(world.data / "corpus.npy")
    corpus[row] = fill
    np.save(world.data / "corpus.npy", corpus)


# each case: (name, command, break the world → the command's arguments, phrase in the error)
Case = tuple[str, Callable[[World], list[str]], str]


def fit_args(world: World, *extra: str) -> list[str]:
    return ["fit", str(world.data), "--out", str(world.out), *extra]


def apply_args(world: World, *extra: str) -> list[str]:
    return [
        "apply",
        "--store",
        world.store,
        "--table",
        "docs",
        "--labels",
        str(world.labels),
        *extra,
    ]


def _set(world: World, name: str, value: object, where: Path | None = None) -> None:
    ((where or world.data) / name).write_text(json.dumps(value))


CASES: list[Case] = [
    # the corpus
    (
        "corpus missing",
        lambda w: ((w.data / "corpus.npy").unlink(), fit_args(w))[1],
        "missing corpus.npy",
    ),
    (
        "corpus pickled",
        lambda w: (
            corrupt_npy(w, "corpus.npy", np.array([{"a": 1}] * 3, dtype=object)),
            fit_args(w),
        )[1],
        "holds Python objects",
    ),
    (
        "corpus not npy",
        lambda w: ((w.data / "corpus.npy").write_text("1,2,3"), fit_args(w))[1],
        "not a readable .npy",
    ),
    ("corpus NaN row", lambda w: (row_of(w, np.nan), fit_args(w))[1], "row 7 contains NaN"),
    ("corpus zero row", lambda w: (row_of(w, 0.0), fit_args(w))[1], "row 7 is all zeros"),
    (
        "corpus 1-D",
        lambda w: (corrupt_npy(w, "corpus.npy", np.ones(10, np.float32)), fit_args(w))[1],
        "2-D matrix",
    ),
    (
        "corpus of ints",
        lambda w: (corrupt_npy(w, "corpus.npy", np.ones((1988, 384), np.int32)), fit_args(w))[1],
        "expected float16/32/64",
    ),
    (
        "corpus a directory",
        lambda w: ((w.data / "corpus.npy").unlink(), (w.data / "corpus.npy").mkdir(), fit_args(w))[
            2
        ],
        "is a directory",
    ),
    (
        "queries of another dimension",
        lambda w: (corrupt_npy(w, "queries.npy", np.ones((1202, 8), np.float32)), fit_args(w))[1],
        "dimension mismatch",
    ),
    # ids
    (
        "corpus ids too few",
        lambda w: (w.edit_json("corpus_ids.json", lambda ids: ids[:-1]), fit_args(w))[1],
        "1987 ids but corpus.npy has 1988 rows",
    ),
    (
        "corpus id twice",
        lambda w: (w.edit_json("corpus_ids.json", lambda ids: [ids[1], *ids[1:]]), fit_args(w))[1],
        "duplicate id",
    ),
    (
        "corpus id null",
        lambda w: (w.edit_json("corpus_ids.json", lambda ids: [None, *ids[1:]]), fit_args(w))[1],
        "ids must be non-empty strings or integers",
    ),
    (
        "corpus id an object",
        lambda w: (w.edit_json("corpus_ids.json", lambda ids: [{}, *ids[1:]]), fit_args(w))[1],
        "ids must be non-empty strings or integers",
    ),
    (
        "corpus ids not a list",
        lambda w: (_set(w, "corpus_ids.json", {"a": 1}), fit_args(w))[1],
        "expected a JSON list of ids",
    ),
    # labels
    (
        "qrels invalid JSON",
        lambda w: ((w.data / "qrels.json").write_text("{"), fit_args(w))[1],
        "qrels.json: invalid JSON",
    ),
    (
        "qrels not UTF-8",
        lambda w: ((w.data / "qrels.json").write_bytes(b'{"q\xff": {}}'), fit_args(w))[1],
        "qrels.json: not UTF-8",
    ),
    (
        "qrels nested 100,000 deep",
        lambda w: ((w.data / "qrels.json").write_text("[" * 100_000 + "]" * 100_000), fit_args(w))[
            1
        ],
        "nested too deeply",
    ),
    (
        "qrels grade 10**400",
        lambda w: (
            (w.data / "qrels.json").write_text('{"q00000": {"doc00001": 1' + "0" * 400 + "}}"),
            fit_args(w),
        )[1],
        "must be a finite number",
    ),
    (
        "qrels grade a string",
        lambda w: (_set(w, "qrels.json", {"q00000": {"doc00001": "high"}}), fit_args(w))[1],
        "must be a finite number",
    ),
    (
        "qrels entry a list",
        lambda w: (_set(w, "qrels.json", {"q00000": ["doc00001"]}), fit_args(w))[1],
        "not a {doc_id: relevance} map",
    ),
    (
        "qrels unknown document",
        lambda w: (w.edit_json("qrels.json", lambda q: {**q, "q00000": {"ghost": 1}}), fit_args(w))[
            1
        ],
        "'ghost'",
    ),
    (
        "query in two splits",
        lambda w: (
            w.edit_json("splits.json", lambda s: {**s, "val": [*s["val"], s["train"][0]]}),
            fit_args(w),
        )[1],
        "in two splits",
    ),
    (
        "no val split",
        lambda w: (
            w.edit_json("splits.json", lambda s: {"train": s["train"], "test": s["test"]}),
            fit_args(w),
        )[1],
        "no split named 'val'",
    ),
    (
        "split names an unknown query",
        lambda w: (
            w.edit_json("splits.json", lambda s: {**s, "train": ["nobody", *s["train"]]}),
            fit_args(w),
        )[1],
        "'nobody'",
    ),
    (
        "val query without an answer",
        lambda w: (
            w.edit_json("splits.json", lambda s: {**s, "val": [*s["val"], "q99999"]}),
            w.edit_json("query_ids.json", lambda ids: ids),
            fit_args(w),
        )[2],
        "'q99999'",
    ),
    (
        "embed_meta not an object",
        lambda w: (_set(w, "embed_meta.json", [1, 2]), fit_args(w))[1],
        "embed_meta.json: expected a JSON object",
    ),
    # options
    (
        "gamma 1e40 for NUDGE-M",
        lambda w: fit_args(w, "--method", "nudge-m", "--gamma", "1e40"),
        "gamma 1e+40 moves records",
    ),
    (
        "gamma 1e39 for NUDGE-M",
        lambda w: fit_args(w, "--method", "nudge-m", "--gamma", "1e39"),
        "gamma 1e+39 moves records",
    ),
    ("gamma negative", lambda w: fit_args(w, "--gamma", "-1"), "finite number >= 0"),
    ("gamma above 4 for NUDGE-N", lambda w: fit_args(w, "--gamma", "5"), "in [0, 4]"),
    (
        "val-k as large as the corpus",
        lambda w: fit_args(w, "--method", "nudge-n", "--val-k", "5000"),
        "val_k 5000 is not below",
    ),
    (
        "val-k for NUDGE-M",
        lambda w: fit_args(w, "--method", "nudge-m", "--val-k", "3"),
        "--val-k does not apply",
    ),
    ("unknown method", lambda w: fit_args(w, "--method", "foo"), "unknown method 'foo'"),
    ("unknown engine", lambda w: fit_args(w, "--engine", "spark"), "unknown engine 'spark'"),
    ("ray on a .npy corpus", lambda w: fit_args(w, "--engine", "ray"), "reads a Parquet corpus"),
    # the output location
    (
        "out is a file",
        lambda w: (w.out.write_text("x"), fit_args(w))[1],
        "exists and is not a directory",
    ),
    (
        "out under a file",
        lambda w: (
            (w.root / "f").write_text("x"),
            ["fit", str(w.data), "--out", str(w.root / "f" / "out")],
        )[1],
        "f is a file, not a directory",
    ),
    (
        "out holds other files",
        lambda w: (w.out.mkdir(), (w.out / "notes.txt").write_text("mine"), fit_args(w))[2],
        "holds files a fit did not write",
    ),
    (
        "dataset is a file",
        lambda w: (
            (w.root / "file").write_text("x"),
            ["fit", str(w.root / "file"), "--out", str(w.out)],
        )[1],
        "is a file, not a directory",
    ),
    # eval
    (
        "eval embeddings of another shape",
        lambda w: (
            np.save(w.root / "e.npy", np.ones((3, 384), np.float32)),
            ["eval", str(w.data), "--embeddings", str(w.root / "e.npy")],
        )[1],
        "does not match the corpus",
    ),
    (
        "eval embeddings with a zero row",
        lambda w: (
            np.save(w.root / "e.npy", np.zeros((1988, 384), np.float32)),
            ["eval", str(w.data), "--embeddings", str(w.root / "e.npy")],
        )[1],
        "row 0 is all zeros",
    ),
    (
        "eval unknown split",
        lambda w: ["eval", str(w.data), "--split", "nope"],
        "no split named 'nope'",
    ),
    ("eval k 0", lambda w: ["eval", str(w.data), "--k", "0"], "k must be >= 1"),
    # apply, on a real store
    (
        "apply unknown table",
        lambda w: ["apply", "--store", w.store, "--table", "nope", "--labels", str(w.labels)],
        "table 'nope' not found",
    ),
    (
        "apply unknown store kind",
        lambda w: ["apply", "--store", "pinecone:x", "--table", "docs", "--labels", str(w.labels)],
        "expected lancedb:PATH",
    ),
    (
        "apply labels of another dimension",
        lambda w: (
            np.save(w.labels / "queries.npy", np.ones((1202, 8), np.float32)),
            apply_args(w),
        )[1],
        "queries.npy has 8 values",
    ),
    (
        "apply labels naming a missing document",
        lambda w: (
            w.edit_json("qrels.json", lambda q: {**q, "q00000": {"ghost": 1}}, w.labels),
            apply_args(w),
        )[1],
        "'ghost'",
    ),
    (
        "apply unknown metric",
        lambda w: apply_args(w, "--metric", "manhattan"),
        "--metric must be one of",
    ),
    (
        "apply NUDGE-M without a dot metric",
        lambda w: apply_args(w, "--method", "nudge-m"),
        "refusing to write NUDGE-M output",
    ),
    (
        "apply queries without a model",
        lambda w: [
            "apply",
            "--store",
            w.store,
            "--table",
            "docs",
            "--queries",
            str(w.root / "q.csv"),
        ],
        "--queries needs --model",
    ),
    (
        "apply no labels at all",
        lambda w: ["apply", "--store", w.store, "--table", "docs"],
        "give the labels",
    ),
    (
        "rollback with nothing applied",
        lambda w: ["rollback", "--store", w.store, "--table", "docs"],
        "nothing to roll back",
    ),
    # other commands
    ("split of a missing folder", lambda w: ["split", str(w.root / "none")], "does not exist"),
    (
        "report of a folder without fit.json",
        lambda w: (w.out.mkdir(), ["report", str(w.out)])[1],
        "no fit.json",
    ),
    (
        "labels of a table without documents",
        lambda w: (
            (w.root / "q.csv").write_text("question\nhello\n"),
            [
                "labels",
                str(w.out),
                "--queries",
                str(w.root / "q.csv"),
                "--model",
                "all-MiniLM-L6-v2",
            ],
        )[1],
        "no document column",
    ),
]


def test_the_suite_covers_at_least_forty_kinds_of_bad_input():
    assert len(CASES) >= 40 and len({name for name, _, _ in CASES}) == len(CASES)


def store_state(world: World) -> tuple[bytes, list[str]]:
    """The store as its own client sees it, and what lies beside it."""
    import lancedb

    table = lancedb.connect(str(world.root / "db")).open_table("docs")
    data = table.to_arrow()
    return (
        np.asarray(data.column("vector").combine_chunks().flatten()).tobytes()
        + str(table.schema).encode(),
        sorted(str(p.relative_to(world.root)) for p in (world.root / "db").rglob("*nudgekit*")),
    )


@pytest.mark.parametrize(("name", "breaks", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, name, breaks, phrase):
    uses_store = any(word in name for word in ("apply", "rollback"))
    world = make_world(tmp_path, with_store=uses_store)
    args = breaks(world)
    out_before = sorted(p.name for p in world.out.iterdir()) if world.out.is_dir() else None
    store_before = store_state(world) if uses_store else None
    result = runner.invoke(app, args)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in result.output
    out_after = sorted(p.name for p in world.out.iterdir()) if world.out.is_dir() else None
    if world.out.is_file():
        out_after = out_before
    assert out_after == out_before, out_after  # the output location is as it was
    assert not list(world.root.glob(".*partial*"))  # no half-written leftovers
    if uses_store:
        assert store_state(world) == store_before


# -- faults: kill -9, racing runs ---------------------------------------------------------------
def fit_process(data: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", CLI, "fit", str(data), "--out", str(out), "--quiet", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def complete_run(out: Path) -> dict:
    """The run in ``out`` is whole: fit.json agrees with the files beside it."""
    fit = json.loads((out / "fit.json").read_text())
    embeddings = np.load(out / "embeddings.npy", mmap_mode="r")
    rows = np.load(out / "changed_rows.npy")
    assert embeddings.shape == (fit["n_records"], fit["dim"]) and len(rows) == fit["n_changed"]
    return fit


def test_a_killed_fit_leaves_the_old_run_or_the_new_one(tmp_path):
    world = make_world(tmp_path, with_store=False)
    old = runner.invoke(app, [*fit_args(world, "--method", "nudge-m"), "--quiet"])
    assert old.exit_code == 0, old.output
    old_fit = complete_run(world.out)
    rng = random.Random(0)
    outcomes = set()
    for _ in range(6):  # bounded: a kill at a random moment of a ~2 s run
        proc = fit_process(world.data, world.out)
        time.sleep(rng.uniform(0.3, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        fit = complete_run(world.out)
        outcomes.add(fit["method"])
        assert fit["method"] in ("nudge-m", "nudge-cv")
        if fit["method"] == "nudge-m":
            assert fit["created"] == old_fit["created"]  # untouched, not half-replaced
        assert sorted(p.name for p in world.out.iterdir()) == [
            "changed_rows.npy",
            "embeddings.npy",
            "fit.json",
        ]
    assert outcomes <= {"nudge-m", "nudge-cv"}


def test_two_fits_into_one_folder_one_wins_the_other_says_why(tmp_path):
    world = make_world(tmp_path, with_store=False)
    for _ in range(3):
        procs = [fit_process(world.data, world.out, "--method", m) for m in ("nudge-n", "nudge-m")]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
        for code, err in results:
            if code != 0:
                lines = err.strip().splitlines()
                assert code == 2 and len(lines) == 1, err
                assert "another nudgekit fit is writing" in lines[0], err
        assert any(code == 0 for code, _ in results)
        complete_run(world.out)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], list(
            tmp_path.iterdir()
        )
        if os.environ.get("NUDGEKIT_FUZZ_REPORT"):
            print([code for code, _ in results])


def test_a_planted_link_at_a_temporary_name_is_never_followed(tmp_path):
    world = make_world(tmp_path, with_store=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    world.out.mkdir()
    for name in (".embeddings.npy.partial", ".fit.json.partial", ".out.partial"):
        (world.out / name).symlink_to(victim)  # the temporary names of earlier versions
        (tmp_path / name).symlink_to(victim)
    result = runner.invoke(app, fit_args(world, "--quiet"))
    assert result.exit_code != 0 or (world.out / "fit.json").is_file(), result.output
    assert victim.read_text() == "precious"
