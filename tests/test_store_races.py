"""Two ``nudgekit apply`` processes on one store at once: one wins, the other stops with one
clear line, no update is lost and the history stays true — for every kind of store.

Each round starts two applies with different labels at the same moment. A loser must exit
with code 2 and one ``error:`` line; a process that started after the winner finished may
succeed too. Whatever happened, the store must hold exactly what a single apply of the
last recorded labels gives (every apply starts from the originals), and the history must
hold one record per apply that wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nudgekit.workflows.apply import apply_to_store, store_history

from .storekit import ALL_KINDS, build_store, scratch_dir, write_labels

ROUNDS = 4
CLI = "from nudgekit.cli import main; main()"


@pytest.fixture
def scratch(tmp_path):
    yield from scratch_dir(tmp_path)


def start(spec: str, table: str | None, labels: Path) -> subprocess.Popen[str]:
    args = ["apply", "--store", spec, "--labels", str(labels), "--quiet"]
    if table:
        args += ["--table", table]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_racing_applies_never_lose_an_update(kind, scratch):
    base = build_store(kind, scratch / "base")
    n_train = len(base.problem.train_q)
    labels = {
        "half": write_labels(base, scratch / "half", train=slice(0, n_train // 2), test=False),
        "full": write_labels(base, scratch / "full", test=False),
    }
    # what one apply of each label set gives, from the originals
    want = {}
    for name, path in labels.items():
        alone = build_store(kind, scratch / f"alone-{name}")
        apply_to_store(alone.spec, path, table=alone.table)
        want[str(path.resolve())] = alone.matrix()

    target = build_store(kind, scratch / "target")
    n_records = 0
    for round_ in range(ROUNDS):
        order = ("half", "full") if round_ % 2 else ("full", "half")
        procs = [start(target.spec, target.table, labels[name]) for name in order]
        results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
        results = [(code, out, err) for out, err, code in results]
        for code, _out, err in results:
            if code != 0:
                assert code == 2, err
                lines = err.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: "), err
                assert "another" in lines[0] and "Traceback" not in err, err
        assert any(code == 0 for code, _, _ in results)
        history = store_history(target.spec, table=target.table)
        assert all(r["status"] == "done" for r in history)
        applies = [r for r in history if r["kind"] == "apply"]
        assert len(applies) >= n_records  # records are never lost
        n_records = len(applies)
        assert len({r["seq"] for r in history}) == len(history)
        np.testing.assert_array_equal(target.matrix(), want[applies[-1]["labels"]])
