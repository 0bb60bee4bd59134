"""What every vector-store adapter provides, and the small pieces they share.

An adapter reads a store's ``(id, vector)`` rows in batches, says which metric the store
searches with, writes changed rows by id in one atomic step (new vector and kept original
together), records each write, rolls the last one back and lists them. The NUDGE logic —
which rows change, from which originals — lives in :mod:`nudgekit.apply`, once for all
stores.

Per-row bookkeeping, the same in every store: the **original** (pre-trained) vector of each
row nudgekit ever rewrote, and the **digest** of the vector nudgekit last wrote there. The
original is trusted only while the row still holds that vector (digest match); a row that
someone re-embedded since is taken as it is now, so nudgekit never reverts a new embedding
to a nudge of an obsolete one.
"""

from __future__ import annotations

import os
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

#: progress(phase, done, total), as in :mod:`nudgekit.core`.
ProgressCallback = Callable[[str, int, int], None]

#: Metric names used across stores.
METRICS = ("dot", "cosine", "l2")

#: Environment variable of the fault-injection hook, see :func:`checkpoint`.
FAULT_ENV = "NUDGEKIT_FAULT"


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
    originals : float32 array (b, d)
        The recorded original of each row; meaningful where ``has_original``.
    has_original : bool array (b,)
    digests : int64 array (b,)
        :func:`digest` of the vector nudgekit last wrote to the row; 0 where none.
    """

    ids: list[str]
    keys: list[Any]
    vectors: np.ndarray
    originals: np.ndarray
    has_original: np.ndarray
    digests: np.ndarray


@dataclass
class Changes:
    """Rows to rewrite in one atomic step.

    Attributes
    ----------
    keys, ids : list
        Store-native ids and their string form.
    vectors : float32 array (m, d)
        The new vectors, already in the store's precision.
    originals : float32 array (m, d)
        The pre-trained vector of each row, kept beside the new one.
    digests : int64 array (m,)
        ``digest(vectors)``.
    before : float32 array (m, d)
        What the rows hold now (what a rollback writes back, for stores without versions).
    """

    keys: list[Any]
    ids: list[str]
    vectors: np.ndarray
    originals: np.ndarray
    digests: np.ndarray
    before: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class VectorStore(ABC):
    """One table, collection or index of a vector store.

    Subclasses open the target in ``__init__`` and raise :class:`StoreError` when it is
    missing or unusable. Nothing is written before :meth:`write`, :meth:`rollback` or
    :meth:`recover`.
    """

    kind: ClassVar[str] = ""

    def __init__(self, location: str | os.PathLike[str], table: str | None = None) -> None:
        self.location = Path(location)
        self.table = table

    @property
    def spec(self) -> str:
        """``kind:PATH`` plus the table, for messages."""
        return f"{self.kind}:{self.location}" + (f" (table {self.table!r})" if self.table else "")

    # -- reading ---------------------------------------------------------------------------
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
        """All rows, with their bookkeeping, in batches of at most ``batch_size``."""

    @abstractmethod
    def metric(self) -> MetricInfo:
        """The metric the store or its index is configured for."""

    def model(self) -> str | None:
        """The embedding model the store's own metadata names, if any."""
        return None

    # -- writing ---------------------------------------------------------------------------
    @abstractmethod
    def recover(self) -> list[dict[str, Any]]:
        """Complete or discard an operation a crash interrupted; return the records touched.

        Called before every apply and rollback, so each of them starts from a settled
        state: the one before the interrupted operation or the one after it.
        """

    @abstractmethod
    def write(
        self, changes: Changes, record: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Write ``changes`` atomically and append ``record`` to the history.

        Returns the record completed with what the store adds (``seq``, versions, tags).
        With no changes nothing is written to the data, only the record.
        """

    @abstractmethod
    def rollback(self, *, force: bool = False) -> dict[str, Any]:
        """Undo the last apply not undone yet; return the rollback record."""

    @abstractmethod
    def history(self) -> list[dict[str, Any]]:
        """Every apply and rollback recorded, oldest first (interrupted ones included)."""

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027  (most stores hold nothing to release)
        """Release what the adapter holds (file locks, handles)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def checkpoint(name: str) -> None:
    """Fault-injection hook between the steps of a write (used by the crash tests).

    With ``NUDGEKIT_FAULT=name`` in the environment the process kills itself here with
    SIGKILL — no cleanup, no ``finally`` — exactly as a crash or ``kill -9`` would. With
    ``NUDGEKIT_FAULT=?`` it prints each checkpoint name on stderr as it passes.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    if wanted == "?":
        print(f"nudgekit-checkpoint {name}", file=sys.stderr, flush=True)
    elif wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)


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


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id() -> str:
    """A short random id for an apply or rollback."""
    return os.urandom(6).hex()
