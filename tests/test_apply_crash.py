"""Apply and rollback are all-or-nothing: kill them with SIGKILL and look at the store.

Each scenario copies a store in a known state, runs ``apply`` (or ``rollback``) in a
subprocess and kills it — at a named step of the write protocol (the fault-injection hook
``NUDGEKIT_FAULT``, see ``nudgekit.stores.ledger.checkpoint``), or at a random moment once
the writing has begun. Then the store must be at the old or the new state and readable
(LanceDB and FAISS as read by their own clients: one commit, one rename; Qdrant local mode,
which persists point by point, once nudgekit has rolled its journal forward, as every
nudgekit command does first), rollback must go one state back, and a new apply must reach
the same state as an uninterrupted one.

States: S0 pristine; S1 after applying half the training labels; S2 after all of them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nudgekit.workflows.apply import apply_to_store, rollback_store, store_history

from .storekit import ALL_KINDS, Target, build_store, clone, scratch_dir, write_labels

WORKER = """
import sys
from nudgekit.workflows.apply import apply_to_store, rollback_store
from nudgekit.stores import open_store

op, spec, table, labels = sys.argv[1:5]
options = {"write_batch": 8} if spec.startswith("qdrant:") else {}
with open_store(spec, table or None, **options) as store:
    if op == "apply":
        apply_to_store(store, labels)
    else:
        rollback_store(store)
"""

#: Named steps of the write protocol, the same for every store: before the journal is
#: complete (the old state stays) and after it (the next command rolls forward: new).
BEFORE = ("{kind}.begin", "ledger.journal-saved")
AFTER = (
    "{kind}.pending",
    "{kind}.written",
    "ledger.rows-saved",
    "ledger.state-saved",
    "{kind}.committed",
)
#: steps of one store only
EXTRA = {
    "qdrant": ("qdrant.batch",),
    "faiss": ("faiss.tmp-written",),
    "chroma": ("chroma.batch",),
    "pgvector": ("pgvector.batch",),
}
#: random kills once writing has begun: (after this checkpoint, how many, within seconds)
#: (a FAISS commit takes a few ms; kinds not named here: 0.05 s)
RANDOM = {"faiss": 0.003}


def points(kind: str) -> list[tuple[str, str]]:
    """(phase, checkpoint): each step in an apply and in a rollback (a second apply is
    killed at random moments instead)."""
    steps = [p.format(kind=kind) for p in (*BEFORE, *AFTER)] + list(EXTRA.get(kind, ()))
    return [(phase, step) for step in steps for phase in ("first", "rollback")]


PHASE = {"first": ("S0", "S1"), "second": ("S1", "S2"), "rollback": ("S2", "S1")}


@dataclass
class World:
    """The three reference states of one kind of store, and the labels that make them."""

    states: dict[str, Target]
    matrices: dict[str, np.ndarray]
    half: Path
    full: Path


def make_world(kind: str, base: Path) -> World:
    s0 = build_store(kind, base / "S0")
    n_train = len(s0.problem.train_q)
    half = write_labels(s0, base / "half", train=slice(0, n_train // 2), test=False)
    full = write_labels(s0, base / "full", test=False)
    s1 = clone(s0, base / "S1")
    apply_to_store(s1.spec, half, table=s1.table)
    s2 = clone(s1, base / "S2")
    apply_to_store(s2.spec, full, table=s2.table)
    states = {"S0": s0, "S1": s1, "S2": s2}
    matrices = {k: t.matrix() for k, t in states.items()}
    assert not np.array_equal(matrices["S1"], matrices["S0"])
    assert not np.array_equal(matrices["S2"], matrices["S1"])
    return World(states, matrices, half, full)


@dataclass
class Scenario:
    phase: str
    point: str  # a checkpoint, or "random:<after>"
    target: Target
    seed: int = 0
    within: float = 0.0
    returncode: int | None = None
    stderr: str = ""


def run_and_kill(scenario: Scenario, world: World) -> Scenario:
    """Run the phase's operation in a subprocess and kill it as the scenario says."""
    target = scenario.target
    labels = world.half if scenario.phase == "first" else world.full
    op = "rollback" if scenario.phase == "rollback" else "apply"
    args = [sys.executable, "-c", WORKER, op, target.spec, target.table or "", str(labels)]
    random_kill = scenario.point.startswith("random:")
    env = dict(os.environ, NUDGEKIT_FAULT="?" if random_kill else scenario.point)
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if random_kill:
        trigger = "nudgekit-checkpoint " + scenario.point.partition(":")[2]
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if line.strip() == trigger:
                time.sleep(random.Random(scenario.seed).uniform(0, scenario.within))
                proc.send_signal(signal.SIGKILL)
                break
        scenario.stderr = "".join(lines)
        proc.wait(timeout=120)
    else:
        scenario.stderr = proc.communicate(timeout=120)[1]
    scenario.returncode = proc.returncode
    return scenario


def check(scenario: Scenario, world: World) -> str:
    """The state the store was found in (``old`` or ``new``), after all the checks."""
    target = scenario.target
    old, new = PHASE[scenario.phase]
    m = world.matrices
    if scenario.point.startswith("random:"):
        assert scenario.returncode in (-signal.SIGKILL, 0), scenario.stderr
    else:
        assert scenario.returncode == -signal.SIGKILL, (
            f"{scenario.point} did not kill the process:\n{scenario.stderr}"
        )

    if target.kind.name != "qdrant":
        # as the store's own client sees it, before nudgekit touches anything
        raw = target.matrix()
        assert np.array_equal(raw, m[old]) or np.array_equal(raw, m[new])
    with target.open() as store, store.lock():
        store.recover()  # what every nudgekit command does first
    found = target.matrix()
    at = "old" if np.array_equal(found, m[old]) else "new"
    assert np.array_equal(found, m[old] if at == "old" else m[new]), "neither old nor new"
    assert all(r["status"] != "pending" for r in store_history(target.spec, table=target.table))

    # rollback goes one state back from wherever the crash left the store
    state = old if at == "old" else new
    back = {"S2": "S1", "S1": "S0", "S0": None}[state]
    if back is None:
        with pytest.raises(ValueError, match="nothing to roll back"):
            rollback_store(target.spec, table=target.table)
    else:
        rollback_store(target.spec, table=target.table)
        assert np.array_equal(target.matrix(), m[back])
    # and a new apply lands exactly where an uninterrupted one does
    apply_to_store(target.spec, world.full, table=target.table)
    assert np.array_equal(target.matrix(), m["S2"])
    return at


@pytest.fixture
def scratch(tmp_path):
    yield from scratch_dir(tmp_path)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_killed_apply_or_rollback_leaves_the_old_or_the_new_state(kind, scratch):
    world = make_world(kind, scratch / "world")
    scenarios = []
    for n, (phase, point) in enumerate(points(kind)):
        start = world.states[PHASE[phase][0]]
        scenarios.append(Scenario(phase, point, clone(start, scratch / f"case{n}")))
    for k in range(3):
        start = clone(world.states["S1"], scratch / f"random{k}")
        random_point = f"random:{kind}.pending"
        scenarios.append(
            Scenario("second", random_point, start, seed=k, within=RANDOM.get(kind, 0.05))
        )

    # the subprocesses mostly wait on imports and disk: run a few more than there are CPUs
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        done = list(pool.map(lambda s: run_and_kill(s, world), scenarios))

    found = {f"{s.phase}@{s.point}#{s.seed}": check(s, world) for s in done}
    if os.environ.get("NUDGEKIT_CRASH_REPORT"):
        print({k: (v, s.returncode) for (k, v), s in zip(found.items(), done, strict=True)})
    # a kill before the journal is complete leaves the old state, any later one the new
    before = {p.format(kind=kind) for p in BEFORE}
    for s in done:
        if s.point.startswith("random:"):
            continue
        want = "old" if s.point in before else "new"
        assert found[f"{s.phase}@{s.point}#{s.seed}"] == want, (s.phase, s.point)
