"""What every vector-store adapter provides, and the write protocol they all share.

An adapter only reads and writes vectors: it reads a store's ``(id, vector)`` rows in
batches, says which metric the store searches with, reads given rows back and writes
vectors by id. Everything else is written once, here, for every store:

- **bookkeeping** in a :class:`~nudgekit.stores.ledger.Ledger` kept where the store's own
  search never sees it: the **original** (pre-trained) vector of each row nudgekit
  rewrote and the **digest** of the vector it last wrote there. An original is trusted only
  while the row still holds that vector, so a row re-embedded since is taken as it is now;
- **the write protocol** (:meth:`VectorStore.write`): the journal of what to write and what
  each row must hold first is recorded before the first vector changes; rows are written
  only where they still hold what nudgekit read; what the store then holds is read back
  for the digests; the new bookkeeping is committed last. A crash anywhere is rolled
  forward by the next command (:meth:`VectorStore.recover`);
- **history**, the **writer lock**, and a **row-wise rollback** that restores exactly the
  rows an apply wrote that still hold what it wrote — rows added, deleted or re-embedded
  since are left as they are and counted.

The NUDGE logic — which rows change, from which originals — lives in
:mod:`nudgekit.workflows.apply`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nudgekit.stores.ledger import Ledger, Rows, checkpoint

#: progress(phase, done, total), as in :mod:`nudgekit.core`.
ProgressCallback = Callable[[str, int, int], None]

#: Metric names used across stores.
METRICS = ("dot", "cosine", "l2")


#: A row counts as holding what nudgekit wrote when it is within this of it (stores that
#: round what they store, e.g. Qdrant normalising for Cosine, never hold the exact bits).
WRITTEN_ATOL = 1e-6


class StoreError(ValueError):
    """A store cannot be opened or used as asked (unknown table, column, wrong type...)."""


@dataclass(frozen=True)
class MetricInfo:
    """The metric a store searches with, as far as the store itself can tell.

    Attributes
    ----------
    name : str or None
        ``"dot"``, ``"cosine"``, ``"l2"`` (or another store-specific name); ``None`` when the
        store does not fix it (a LanceDB table without a vector index picks it per query).
    source : str
        Where it comes from, for messages (``"index 'vector_idx'"``, ``"collection distance"``).
    declarable : bool
        True when the store cannot tell, so the user's ``--metric`` is taken at its word.
    """

    name: str | None
    source: str
    declarable: bool = False


@dataclass
class RowBatch:
    """A batch of rows as read from a store.

    Attributes
    ----------
    ids : list of str
        Row ids as strings: what qrels name.
    keys : list
        The same ids in the store's own type (int, str, UUID string): what writes need.
    vectors : float32 array (b, d)
        The vectors the store holds now.
    """

    ids: list[str]
    keys: list[Any]
    vectors: np.ndarray


@dataclass
class Changes:
    """Rows to rewrite in one apply.

    Attributes
    ----------
    keys, ids : list
        Store-native ids and their string form.
    vectors : float32 array (m, d)
        The new vectors, already in the store's precision.
    originals : float32 array (m, d)
        The pre-trained vector of each row, kept in the ledger.
    before : float32 array (m, d)
        What the rows held when nudgekit read them: a row is written only while it still
        does, and a rollback writes it back.
    """

    keys: list[Any]
    ids: list[str]
    vectors: np.ndarray
    originals: np.ndarray
    before: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class VectorStore(ABC):
    """One table, collection or index of a vector store.

    Subclasses open the target in ``__init__`` (raising :class:`StoreError` when it is
    missing or unusable), set :attr:`ledger`, and implement the reading and writing of
    vectors. Nothing is written before :meth:`write`, :meth:`rollback` or :meth:`recover`.
    """

    kind: ClassVar[str] = ""
    ledger: Ledger

    def __init__(self, location: str | os.PathLike[str], table: str | None = None) -> None:
        self.location = Path(location)
        self.table = table

    @property
    def spec(self) -> str:
        """``kind:PATH`` plus the table, for messages."""
        return f"{self.kind}:{self.location}" + (f" (table {self.table!r})" if self.table else "")

    # -- what adapters implement: reading ---------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int:
        """Values per vector."""

    @property
    def dtype(self) -> np.dtype:
        """The precision vectors are stored in (new vectors are rounded to it first)."""
        return np.dtype(np.float32)

    @abstractmethod
    def count(self) -> int:
        """Number of rows."""

    @abstractmethod
    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        """All rows, in batches of at most ``batch_size``."""

    @abstractmethod
    def current(self, keys: list[Any]) -> dict[str, np.ndarray]:
        """What rows ``keys`` hold now, by id as text; deleted rows are absent."""

    @abstractmethod
    def metric(self) -> MetricInfo:
        """The metric the store or its index is configured for."""

    def model(self) -> str | None:
        """The embedding model the store's own metadata names, if any."""
        return None

    def search(self, queries: np.ndarray, n: int) -> list[list[Any]]:
        """Each query's ``n`` nearest rows by the store's own search (its index), as keys.

        The search the store's users run (``apply --pass ann`` takes its candidates from
        it); ``queries`` (V, d) are float32 unit rows, each answer is best first.
        """
        raise StoreError(f"{self.spec} cannot be searched by nudgekit: use --pass exact")

    def columns(self) -> dict[str, Any]:
        """The id and vector column names, recorded so later commands need not be told."""
        return {}

    def stored(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as the store will hold them once written (Qdrant normalises for
        Cosine): what "the row holds what nudgekit wrote" is checked against."""
        return vectors

    def version(self) -> int | None:
        """The store's own version number, where it keeps versions (LanceDB)."""
        return None

    def key_of(self, text: str, is_int: bool) -> Any:
        """The store-native id of a row recorded as text (ints were recorded as such)."""
        return int(text) if is_int else text

    # -- what adapters implement: writing ---------------------------------------------------
    @abstractmethod
    def write_vectors(
        self, keys: list[Any], vectors: np.ndarray, progress: ProgressCallback | None = None
    ) -> None:
        """Set the vector of rows ``keys`` (existing rows only); idempotent."""

    def flush(self) -> None:  # noqa: B027  (most stores are durable once written)
        """Make what :meth:`write_vectors` wrote durable and visible to the store's readers."""

    def after_write(self, reindex: bool) -> str | None:
        """Bring the store's own search structures up to date (``reindex``), or say what is
        left to do; returns a line for the user, or None."""
        return None

    def lock(self) -> Any:
        """A context manager: the exclusive writer lock of this target."""
        return self.ledger.files.lock()

    def transaction(self) -> Any:
        """A context manager around one whole write (stores with transactions use it)."""
        return contextlib.nullcontext()

    # -- the protocol, once for every store ------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        """Every apply and rollback recorded, oldest first (interrupted ones included)."""
        return self.ledger.history()

    def bookkeeping(self) -> Rows:
        """The committed per-row originals and digests."""
        return self.ledger.rows()

    def write(
        self,
        changes: Changes,
        record: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Write ``changes`` (one apply) and record it; returns the completed record.

        Call under :meth:`lock`, after :meth:`recover`. Rows that no longer hold what
        nudgekit read are left alone and counted (``n_skipped``).
        """
        if not len(changes):
            raise ValueError("an apply that changes nothing is not recorded")
        state = self.ledger.state()
        g = state["generation"] + 1
        record = dict(
            record,
            seq=next_seq(state["history"]),
            status="done",
            version_before=g - 1,
            version_after=g,
            columns=self.columns(),
            store_version_before=self.version(),
        )
        journal = {
            "ids": np.asarray(changes.ids, dtype=str),
            "is_int": np.array([isinstance(k, int) for k in changes.keys], dtype=bool),
            "vectors": np.ascontiguousarray(changes.vectors, dtype=np.float32),
            "expect": digest(changes.before),
            "before": np.ascontiguousarray(changes.before, dtype=np.float32),
            "originals": np.ascontiguousarray(changes.originals, dtype=np.float32),
        }
        pending = {
            "generation": g,
            "kind": "apply",
            "record": record,
            "history": [*state["history"], record],
        }
        return self._run(pending, journal, progress)

    def rollback(self, *, force: bool = False) -> dict[str, Any]:
        """Undo the last apply not undone yet, row by row; return the rollback record.

        Restores what each row the apply wrote held before it, where the row still holds
        what the apply wrote; rows changed or deleted since are left alone and counted.
        Call under :meth:`lock`, after :meth:`recover`.
        """
        state = self.ledger.state()
        target = rollback_target(state["history"])
        if target is None:
            raise ValueError(f"nothing to roll back: {self.spec} has no apply left to undo")
        undo = self.ledger.load(target["undo"])
        ids = undo["ids"].astype(str)
        keys = self._keys(ids, undo["is_int"])
        now = self.current(keys)
        held = np.array([i in now for i in ids], dtype=bool)
        still = held.copy()
        if held.any():
            vectors = np.stack([now[i] for i in ids[held]])
            still[held] = digest(vectors) == undo["written"][held]
        g = state["generation"] + 1
        record = {
            "id": new_id(),
            "seq": next_seq(state["history"]),
            "kind": "rollback",
            "status": "done",
            "created": now_utc(),
            "rolled_back": target["id"],
            "rolled_back_seq": target["seq"],
            "n_restored": 0,
            "n_changed_since": int((held & ~still).sum()),
            "n_deleted_since": int((~held).sum()),
            "version_before": g - 1,
            "version_after": g,
            "forced": bool(force),
        }
        history = [
            dict(r, status="rolled back") if r["id"] == target["id"] else r
            for r in state["history"]
        ]
        journal = {
            "ids": ids[still],
            "is_int": undo["is_int"][still],
            "vectors": undo["before"][still],
            "expect": undo["written"][still],
            "had": undo["had"][still],
            "originals": undo["prior_originals"][still],
        }
        pending = {
            "generation": g,
            "kind": "rollback",
            "record": record,
            "history": [*history, record],
        }
        return self._run(pending, journal, None)

    def recover(self) -> list[dict[str, Any]]:
        """Roll an interrupted write forward; return the records it completed.

        Call under :meth:`lock` before every apply and rollback, so each starts from a
        settled state. Safe to repeat: every step of a write is idempotent.
        """
        pending = self.ledger.pending()
        if pending is None:
            return []
        if pending["generation"] <= self.ledger.state()["generation"]:
            self.ledger.discard()  # committed already; only the clean-up was missed
            return []
        pending["record"]["recovered"] = True
        journal = self.ledger.load(pending["journal"])
        return [self._settle(pending, journal, None)]

    def _run(
        self,
        pending: dict[str, Any],
        journal: dict[str, np.ndarray],
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        with self.transaction():
            checkpoint(f"{self.kind}.begin")
            self.ledger.begin(pending, journal)
            checkpoint(f"{self.kind}.pending")
            return self._settle(self.ledger.pending(), journal, progress)  # type: ignore[arg-type]

    def _settle(
        self,
        pending: dict[str, Any],
        journal: dict[str, np.ndarray],
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        """Write the journal's rows that still hold what it expects, read back, commit."""
        ids = journal["ids"].astype(str)
        keys = self._keys(ids, journal["is_int"])
        new = journal["vectors"].reshape(len(ids), self.dim)
        todo = self._to_write(ids, keys, self.stored(new), journal["expect"])
        if todo.any():
            self.write_vectors([keys[i] for i in np.flatnonzero(todo)], new[todo], progress)
            checkpoint(f"{self.kind}.written")
        self.flush()
        after = self.current(keys)
        present = np.array([i in after for i in ids], dtype=bool)
        written = present.copy()
        vectors = np.zeros_like(new)
        if present.any():
            vectors[present] = np.stack([after[i] for i in ids[present]])
            written[present] = _close(vectors[present], self.stored(new[present]))
        digests = digest(vectors[written])

        rows = self.ledger.rows()
        record = pending["record"]
        undo = None
        if pending["kind"] == "apply":
            at, had = rows.find(ids[written])
            prior = np.zeros((len(at), self.dim), dtype=np.float32)
            prior[had] = rows.originals[at[had]]
            undo = {
                "ids": ids[written],
                "is_int": journal["is_int"][written],
                "before": journal["before"][written],
                "written": digests,
                "had": had,
                "prior_originals": prior,
            }
            rows = rows.merged(Rows.of(ids[written], journal["originals"][written], digests))
            record.update(
                n_written=int(written.sum()),
                n_skipped=int((~written).sum()),
                undo=f"undo-{pending['generation']}.npz",
                store_version_after=self.version(),
            )
        else:
            had = journal["had"][written]
            restored = ids[written]
            rows = rows.without(restored[~had]).merged(
                Rows.of(restored[had], journal["originals"][written][had], digests[had])
            )
            record.update(
                n_restored=int(written.sum()),
                n_changed_since=record["n_changed_since"] + int((present & ~written).sum()),
                n_deleted_since=record["n_deleted_since"] + int((~present).sum()),
            )
        pending["history"] = [record if r["id"] == record["id"] else r for r in pending["history"]]
        self.ledger.commit(pending, rows, undo, settings=self.columns())
        checkpoint(f"{self.kind}.committed")
        return record

    def _keys(self, ids: np.ndarray, is_int: np.ndarray) -> list[Any]:
        return [self.key_of(i, b) for i, b in zip(ids.tolist(), is_int.tolist(), strict=True)]

    def _to_write(
        self, ids: np.ndarray, keys: list[Any], new: np.ndarray, expect: np.ndarray
    ) -> np.ndarray:
        """The journal rows to write: still in the store, not holding the new vector yet,
        and holding what the journal expects (nobody changed them since nudgekit read them)."""
        now = self.current(keys)
        held = np.array([i in now for i in ids], dtype=bool)
        todo = np.zeros(len(ids), dtype=bool)
        if held.any():
            vectors = np.stack([now[i] for i in ids[held]])
            todo[held] = ~_close(vectors, new[held]) & (digest(vectors) == expect[held])
        return todo

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027  (most stores hold nothing to release)
        """Release what the adapter holds (file locks, handles)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_module(name: str, kind: str) -> Any:
    """Import a store's client library, or say which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"{kind} stores need the {name.split('.')[0]} package ({err}); install it with: "
            f"pip install 'nudgekit[{kind}]'"
        ) from None


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` within :data:`WRITTEN_ATOL` of the same rows of ``b``."""
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    return np.all(np.abs(a.astype(np.float32) - b.astype(np.float32)) <= WRITTEN_ATOL, axis=1)


# -- bookkeeping helpers -------------------------------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (uint64 arithmetic wraps, which is what we want)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def digest(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint of each row's exact float32 bits (never 0, which means "none").

    Fully specified arithmetic (no RNG, no library hash), so the digests a store holds stay
    valid across numpy versions and platforms.
    """
    bits = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        keys = _mix(np.arange(1, bits.shape[1] + 1, dtype=np.uint64) * _GOLDEN) | np.uint64(1)
        h = _mix((bits * keys).sum(axis=1, dtype=np.uint64) + np.uint64(bits.shape[1]))
    return (h | np.uint64(1)).view(np.int64)


def same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Which rows of two float32 matrices are bit-for-bit equal."""
    a32 = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    b32 = np.ascontiguousarray(b, dtype=np.float32).view(np.uint32)
    return np.all(a32 == b32, axis=1)


# -- history helpers -----------------------------------------------------------------------
def rollback_target(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last apply not rolled back yet (one that wrote nothing included: undoing it is a
    no-op, and the next rollback goes further back)."""
    for record in reversed(history):
        if record["kind"] == "apply" and record["status"] == "done":
            return record
    return None


def next_seq(history: list[dict[str, Any]]) -> int:
    """The sequence number of the next event (1 for the first)."""
    return max((int(r["seq"]) for r in history), default=0) + 1


def now_utc() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id() -> str:
    """A short random id for an apply or rollback."""
    return os.urandom(6).hex()
