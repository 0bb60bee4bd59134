"""One array vocabulary for numpy (CPU) and torch (CPU or CUDA).

The NUDGE algorithms are written once against :class:`Backend`; only the handful of
operations whose spelling differs between numpy and torch live here (the idea of
scikit-learn's array-API dispatch, without its dependency). Heavy dense work (matrix
products, element-wise updates, reductions) runs on the backend's device; small ragged
bookkeeping (candidate lists, interval sweeps) comes back to numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # np.ndarray or torch.Tensor

#: strided column groups of :meth:`Backend.merge_top_k_values` (fewer: a cheaper group
#: maximum, more candidates to look into; 512 was fastest at 2,048 × 8,192 on this machine)
MERGE_GROUPS = 512


class Backend:
    """numpy implementation; :class:`TorchBackend` overrides what torch spells differently."""

    name = "numpy"

    def asarray(self, x: np.ndarray, dtype: Any = np.float32) -> Array:
        return np.ascontiguousarray(x, dtype=dtype)

    def index(self, x: np.ndarray) -> Array:
        """An integer index array usable to index backend arrays."""
        return np.asarray(x, dtype=np.int64)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def full(self, shape: tuple[int, ...], value: float) -> Array:
        return np.full(shape, value, dtype=np.float32)

    def concat(self, xs: list[Array], axis: int = 0) -> Array:
        return np.concatenate(xs, axis=axis)

    def amax(self, x: Array, axis: int) -> Array:
        return x.max(axis=axis)

    def amin(self, x: Array, axis: int) -> Array:
        return x.min(axis=axis)

    def any(self, x: Array, axis: int) -> Array:
        return x.any(axis=axis)

    def maximum(self, a: Array, b: Array) -> Array:
        return np.maximum(a, b)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def where(self, cond: Array, a: Array | float, b: Array | float) -> Array:
        return np.where(cond, a, b)

    def nonzero(self, mask: Array) -> tuple[Array, ...]:
        return np.nonzero(mask)

    def top_k_values(self, x: Array, k: int) -> Array:
        """The ``k`` largest values of each row, in no particular order."""
        if k >= x.shape[1]:
            return x
        return np.partition(x, x.shape[1] - k, axis=1)[:, x.shape[1] - k :]

    def merge_top_k_values(self, best: Array, scores: Array, floor: Any = None) -> Array:
        """``best`` (V × k, each row's k largest values so far, any order) updated with
        ``scores`` (V × n): the k largest of each row of both, in no particular order.
        With ``floor`` (V,), scores at or below a row's floor may be left out (the k
        largest of ``best`` and the scores above the floor, padded with -inf).

        Only scores above a row's current k-th best can enter, and after the first blocks
        of a pass few do. Each row's columns are dealt into :data:`MERGE_GROUPS` strided
        groups (column j into group j mod G); one pass takes every group's maximum, and
        only the groups whose maximum beats the row's threshold are looked into. That
        costs about a row maximum (the k = 1 pass) instead of partitioning k + n values
        per row, and gives the same values as the partition.
        """
        k = best.shape[1]
        n_rows, n = scores.shape
        width = MERGE_GROUPS
        main = n - n % width
        if main < 4 * width:  # too few columns for groups to pay
            return self.top_k_values(np.concatenate([best, scores], axis=1), k)
        threshold = best.min(axis=1)
        if floor is not None:
            threshold = np.maximum(threshold, np.asarray(floor, dtype=threshold.dtype))
        threshold = threshold[:, None]
        grouped = scores[:, :main].reshape(n_rows, main // width, width)  # a view
        row, group = np.nonzero(grouped.max(axis=1) > threshold)
        if 8 * len(row) > n_rows * width:  # the first blocks: most groups gain
            return self.top_k_values(np.concatenate([best, scores], axis=1), k)
        values = grouped[row, :, group]  # (candidate groups, main / width)
        at_row, at_col = np.nonzero(values > threshold[row])
        tail = scores[:, main:]
        tail_row, tail_col = np.nonzero(tail > threshold)
        rows = np.concatenate([row[at_row], tail_row])
        if len(rows) == 0:
            return best
        entering = np.concatenate([values[at_row, at_col], tail[tail_row, tail_col]])
        hit = np.unique(rows)
        all_rows = np.concatenate([np.repeat(hit, k), rows])
        all_values = np.concatenate([best[hit].ravel(), entering])
        order = np.lexsort((-all_values, all_rows))
        sorted_rows = all_rows[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_rows, sorted_rows)
        out = best.copy()
        out[hit] = all_values[order][rank < k].reshape(len(hit), k)
        return out


class TorchBackend(Backend):
    """torch on any device (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...)."""

    name = "torch"

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def asarray(self, x: np.ndarray, dtype: Any = np.float32) -> Array:
        t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))
        return t.to(self.device)

    def index(self, x: np.ndarray) -> Array:
        return self.torch.from_numpy(np.asarray(x, dtype=np.int64)).to(self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        return x.detach().cpu().numpy()

    def full(self, shape: tuple[int, ...], value: float) -> Array:
        return self.torch.full(shape, value, dtype=self.torch.float32, device=self.device)

    def concat(self, xs: list[Array], axis: int = 0) -> Array:
        return self.torch.cat(xs, dim=axis)

    def amax(self, x: Array, axis: int) -> Array:
        return self.torch.amax(x, dim=axis)

    def amin(self, x: Array, axis: int) -> Array:
        return self.torch.amin(x, dim=axis)

    def any(self, x: Array, axis: int) -> Array:
        return self.torch.any(x, dim=axis)

    def maximum(self, a: Array, b: Array) -> Array:
        return self.torch.maximum(a, b)

    def sqrt(self, x: Array) -> Array:
        return self.torch.sqrt(x)

    def where(self, cond: Array, a: Array | float, b: Array | float) -> Array:
        return self.torch.where(cond, a, b)

    def nonzero(self, mask: Array) -> tuple[Array, ...]:
        return self.torch.nonzero(mask, as_tuple=True)

    def top_k_values(self, x: Array, k: int) -> Array:
        if k >= x.shape[1]:
            return x
        return self.torch.topk(x, k, dim=1, sorted=False).values

    def merge_top_k_values(self, best: Array, scores: Array, floor: Any = None) -> Array:
        # one topk over both (a floor only allows leaving values out): on a GPU that beats
        # the ragged bookkeeping of numpy's merge
        return self.top_k_values(self.torch.cat([best, scores], dim=1), best.shape[1])


def get_backend(device: str | None = None) -> Backend:
    """Pick the array library from a device name.

    ``None``, ``"numpy"`` and ``"cpu"`` run on numpy. ``"torch"`` runs torch on the CPU,
    ``"torch:DEV"`` torch on ``DEV``; any other name (``"cuda"``, ``"cuda:1"``, ``"mps"``)
    is taken as a torch device.
    """
    if device is None or device in ("numpy", "cpu"):
        return Backend()
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"device={device!r} needs PyTorch; install it (pip install torch) or use device='cpu'"
        ) from err
    name = "cpu" if device == "torch" else device.removeprefix("torch:")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"unknown device {device!r}: use cpu, torch, cuda, cuda:N or another torch device"
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch build has no usable CUDA device")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here")
    return TorchBackend(name)
