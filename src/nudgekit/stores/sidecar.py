"""nudgekit's own files beside a store that has no versions (FAISS files, Qdrant local).

A sidecar directory holds::

    state.json        {"format", "generation", "rows", "history"}: the committed state
    pending.json      the write in progress, if any (its intent, written before any change)
    rows-<g>.npz      per-row bookkeeping after generation g: ids, digests (and originals)
    undo-<g>.npz      what the rows written by generation g held before (for rollback)
    journal-<g>.npz   the rows generation g writes (stores updated point by point)

``state.json`` is only ever replaced whole (temporary file, rename), and every other file is
written once under a new name before ``state.json`` or ``pending.json`` names it, so a
crash leaves either the old state, or the old state plus a complete ``pending.json`` that
the next command finishes or discards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.io.atomic import atomic_file, write_bytes

FORMAT = 1


@dataclass
class Rows:
    """Per-row bookkeeping: the digest nudgekit last wrote, and (optionally) the original."""

    ids: list[str]
    digests: np.ndarray  # int64
    originals: np.ndarray | None = None  # float32 (n, d)

    @classmethod
    def empty(cls, dim: int | None = None) -> Rows:
        originals = None if dim is None else np.empty((0, dim), dtype=np.float32)
        return cls([], np.empty(0, dtype=np.int64), originals)

    def index(self) -> dict[str, int]:
        return {i: k for k, i in enumerate(self.ids)}

    def restricted(self, keep: set[str]) -> Rows:
        """Only the rows whose id is in ``keep`` (drops deleted records)."""
        pos = [k for k, i in enumerate(self.ids) if i in keep]
        return Rows(
            [self.ids[k] for k in pos],
            self.digests[pos],
            None if self.originals is None else self.originals[pos],
        )

    def updated(
        self, ids: list[str], digests: np.ndarray, originals: np.ndarray | None = None
    ) -> Rows:
        """These rows with ``ids`` set to the given digests (and originals), added if new."""
        where = self.index()
        out_ids = list(self.ids)
        out_digests = list(self.digests)
        out_orig = None if self.originals is None else list(self.originals)
        for k, i in enumerate(ids):
            pos = where.get(i)
            if pos is None:
                where[i] = pos = len(out_ids)
                out_ids.append(i)
                out_digests.append(0)
                if out_orig is not None:
                    out_orig.append(None)
            out_digests[pos] = int(digests[k])
            if out_orig is not None and originals is not None:
                out_orig[pos] = originals[k]
        orig = None
        if out_orig is not None:
            dim = self.originals.shape[1] if self.originals is not None else 0
            orig = (
                np.stack(out_orig).astype(np.float32)
                if out_orig
                else np.empty((0, dim), dtype=np.float32)
            )
        return Rows(out_ids, np.asarray(out_digests, dtype=np.int64), orig)


class Sidecar:
    """The sidecar directory of one store target."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.is_file():
            return {"format": FORMAT, "generation": 0, "rows": None, "history": []}
        state = _read_json(path)
        if state.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown nudgekit state format {state.get('format')!r}")
        return state

    def pending(self) -> dict[str, Any] | None:
        path = self.root / "pending.json"
        return _read_json(path) if path.is_file() else None

    def begin(self, pending: dict[str, Any]) -> None:
        """Record the intent of a write: from here on recovery finishes or discards it."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes(self.root / "pending.json", _dumps(pending), durable=True)

    def finish(self, state: dict[str, Any]) -> None:
        """Commit ``state`` and drop the pending intent (in that order: a crash between
        leaves a pending intent whose state is already committed, which recovery sees)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes(self.root / "state.json", _dumps(state), durable=True)
        self.discard()

    def discard(self) -> None:
        (self.root / "pending.json").unlink(missing_ok=True)

    # -- array files -----------------------------------------------------------------------
    def save(self, name: str, **arrays: np.ndarray) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.root / name, durable=True) as f:
            np.savez(f, **arrays)
        return name

    def load(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.root / name, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def save_rows(self, name: str, rows: Rows) -> str:
        arrays = {"ids": np.asarray(rows.ids, dtype=str), "digests": rows.digests}
        if rows.originals is not None:
            arrays["originals"] = rows.originals
        return self.save(name, **arrays)

    def load_rows(self, name: str | None, dim: int | None = None) -> Rows:
        if name is None:
            return Rows.empty(dim)
        data = self.load(name)
        return Rows(
            [str(i) for i in data["ids"].tolist()],
            data["digests"].astype(np.int64),
            data.get("originals"),
        )


def _dumps(data: Any) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err}); nudgekit's state is damaged") from None
