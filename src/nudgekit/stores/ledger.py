"""nudgekit's bookkeeping beside a store: originals, digests, history, the pending write.

The ledger never touches the user's data; it lives where the store's own search never
sees it — a directory beside the store (:class:`DirectoryFiles`) or a table of the same
database (PostgreSQL) — as a handful of named files::

    state.json        {"format", "generation", "rows", "history", "settings"}: committed state
    pending.json      the write in progress, if any (its journal is complete when this exists)
    journal-<g>.npz   what write <g> puts in the store, and what each row must hold first
    rows-<g>.npz      per-row bookkeeping after write <g>: ids, originals, digests
    undo-<g>.npz      what the rows apply <g> wrote held before, for a row-wise rollback

``state.json`` is only ever replaced whole, and every other file is written once under a
new name before ``state.json`` or ``pending.json`` names it, so a crash leaves the old
state, or the old state plus a complete ``pending.json`` that the next command rolls
forward (:meth:`nudgekit.stores.base.VectorStore.recover`).
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.io.atomic import write_bytes

FORMAT = 2

#: Environment variable of the fault-injection hook, see :func:`checkpoint`.
FAULT_ENV = "NUDGEKIT_FAULT"


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


class LedgerError(ValueError):
    """The ledger is damaged or locked by another nudgekit process."""


@dataclass
class Rows:
    """Per-row bookkeeping, sorted by id: the original of each row nudgekit rewrote, and the
    digest of the vector it last wrote there."""

    ids: np.ndarray  # str, sorted, unique
    originals: np.ndarray  # float32 (n, d)
    digests: np.ndarray  # int64 (n,)

    @classmethod
    def empty(cls, dim: int) -> Rows:
        return cls(np.empty(0, dtype=str), np.empty((0, dim), np.float32), np.empty(0, np.int64))

    @classmethod
    def of(cls, ids: Any, originals: np.ndarray, digests: np.ndarray) -> Rows:
        ids = np.asarray(ids, dtype=str).reshape(-1)
        originals = np.asarray(originals, np.float32)
        if originals.ndim != 2 or len(originals) != len(ids):
            raise ValueError(f"bookkeeping: {len(ids)} ids but originals of {originals.shape}")
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], originals[order], np.asarray(digests, np.int64)[order])

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Position of each of ``ids`` here, and whether it is here at all."""
        ids = np.asarray(ids, dtype=str)
        if len(self.ids) == 0:
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return at, self.ids[at] == ids

    def merged(self, other: Rows) -> Rows:
        """These rows with ``other``'s set (added or replaced)."""
        _, found = other.find(self.ids)
        keep = ~found
        return Rows.of(
            np.concatenate([self.ids[keep], other.ids]),
            np.concatenate([self.originals[keep], other.originals]),
            np.concatenate([self.digests[keep], other.digests]),
        )

    def without(self, ids: Any) -> Rows:
        """These rows less ``ids``."""
        drop = np.isin(self.ids, np.asarray(ids, dtype=str))
        return Rows(self.ids[~drop], self.originals[~drop], self.digests[~drop])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "originals": self.originals, "digests": self.digests}


class LedgerFiles(ABC):
    """Where a ledger's named files live: a directory, or a database table."""

    location: str

    @abstractmethod
    def read(self, name: str) -> bytes | None:
        """The file's content, None when it does not exist."""

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Create or replace ``name``, atomically and durably."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` if it exists."""

    @abstractmethod
    def lock(self) -> Any:
        """A context manager holding the store's writer lock; raises :class:`LedgerError`
        at once (never waits) when another process holds it."""


class DirectoryFiles(LedgerFiles):
    """A ledger directory beside a store (FAISS, Qdrant local mode, LanceDB, Chroma)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes(self.root / name, data, durable=True)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LedgerError(
                        "another nudgekit process is changing this store (it holds "
                        f"{path}); nothing was written — run again when it has finished"
                    ) from None
                raise
            try:
                yield
            finally:
                self._tidy(path)
        finally:
            os.close(fd)  # closing releases the lock

    def _tidy(self, lock: Path) -> None:
        """A ledger that never recorded anything leaves nothing behind (a refused apply)."""
        if any(p.name != "lock" for p in self.root.iterdir()):
            return
        lock.unlink(missing_ok=True)
        folders = [self.root] + ([self.root.parent] if self.root.parent.name == ".nudgekit" else [])
        for folder in folders:
            try:
                folder.rmdir()
            except OSError:
                return


class Ledger:
    """The bookkeeping of one store target, in named files (see the module docstring)."""

    def __init__(self, files: LedgerFiles, dim: int) -> None:
        self.files = files
        self.dim = dim

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        state = self._json("state.json")
        if state is None:
            return {"format": FORMAT, "generation": 0, "rows": None, "history": [], "settings": {}}
        if state.get("format") != FORMAT:
            raise LedgerError(
                f"{self.files.location}: nudgekit state format {state.get('format')!r}, this "
                f"version reads format {FORMAT}"
            )
        return state

    def settings(self) -> dict[str, Any]:
        """What earlier applies recorded about the target (column names ...)."""
        return dict(self.state().get("settings") or {})

    def history(self) -> list[dict[str, Any]]:
        """Every apply and rollback, oldest first; an interrupted one is ``pending``."""
        state = self.state()
        history = list(state["history"])
        pending = self.pending()
        if pending is not None and pending["generation"] > state["generation"]:
            history = [r for r in pending["history"] if r["id"] != pending["record"]["id"]]
            history.append(dict(pending["record"], status="pending"))
        return history

    def rows(self) -> Rows:
        """The committed per-row bookkeeping."""
        name = self.state()["rows"]
        if name is None:
            return Rows.empty(self.dim)
        data = self.load(name)
        return Rows(data["ids"].astype(str), data["originals"].astype(np.float32), data["digests"])

    def pending(self) -> dict[str, Any] | None:
        return self._json("pending.json")

    # -- writing ---------------------------------------------------------------------------
    def begin(self, pending: dict[str, Any], journal: dict[str, np.ndarray]) -> None:
        """Record a write's intent: from here on recovery rolls it forward."""
        g = pending["generation"]
        self.save(f"journal-{g}.npz", **journal)
        checkpoint("ledger.journal-saved")
        self._put_json("pending.json", dict(pending, journal=f"journal-{g}.npz"))

    def commit(
        self,
        pending: dict[str, Any],
        rows: Rows,
        undo: dict[str, np.ndarray] | None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Make ``pending``'s write the committed state, with its bookkeeping."""
        g = pending["generation"]
        state = self.state()
        self.save(f"rows-{g}.npz", **rows.arrays())
        if undo is not None:
            self.save(f"undo-{g}.npz", **undo)
        new = dict(
            state,
            format=FORMAT,
            generation=g,
            rows=f"rows-{g}.npz",
            history=pending["history"],
            settings={**state.get("settings", {}), **(settings or {})},
        )
        checkpoint("ledger.rows-saved")
        self._put_json("state.json", new)
        checkpoint("ledger.state-saved")
        self.files.delete("pending.json")
        self.files.delete(pending["journal"])  # served its purpose
        if state["rows"] and state["rows"] != new["rows"]:
            self.files.delete(state["rows"])  # superseded (undo files keep what rollback needs)

    def append(self, record: dict[str, Any]) -> None:
        """Add an event that changed no bookkeeping (a LanceDB version restore) to history."""
        state = self.state()
        state["history"] = [*state["history"], record]
        self._put_json("state.json", dict(state, format=FORMAT))

    def discard(self) -> None:
        pending = self.pending()
        self.files.delete("pending.json")
        if pending is not None:
            self.files.delete(pending.get("journal", ""))

    # -- files -----------------------------------------------------------------------------
    def save(self, name: str, **arrays: np.ndarray) -> str:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.files.write(name, buffer.getvalue())
        return name

    def load(self, name: str) -> dict[str, np.ndarray]:
        data = self.files.read(name)
        if data is None:
            raise LedgerError(
                f"{self.files.location}: {name} is missing; nudgekit's state is damaged"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}

    def _json(self, name: str) -> Any:
        data = self.files.read(name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LedgerError(
                f"{self.files.location}/{name}: invalid JSON ({err}); nudgekit's state is damaged"
            ) from None

    def _put_json(self, name: str, data: Any) -> None:
        self.files.write(name, (json.dumps(data, indent=1) + "\n").encode())
