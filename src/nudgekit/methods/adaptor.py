"""``adaptor``: a linear map of the query embeddings, trained with in-batch negatives.

The paper's "Adaptor" baseline (after LlamaIndex's linear adapter): a d × d matrix ``W``
applied to query embeddings, identity-initialised, trained on (training query, relevant
record) pairs with the multiple-negatives ranking loss, and kept at the step with the best
validation top-1 accuracy. Records are not changed, so it can be used on a corpus that is
too large to re-embed; it is also the first half of the ``adaptor+nudge-n`` hybrid.

torch is imported inside :meth:`Adaptor.fit`, so the method registry imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nudgekit.core import Relevance, check_matrix, check_rows
from nudgekit.evaluation import retrieval_metrics
from nudgekit.io.dataset import Split
from nudgekit.methods.base import Fitted, Method, Task

if TYPE_CHECKING:
    import torch

# a corpus whose rows have norm 1 within this (relative) tolerance is used as it is
_UNIT_TOLERANCE = 1e-3


class Adaptor(Method):
    """Linear query adaptor trained with the multiple-negatives ranking loss.

    Parameters
    ----------
    lr : float, default 1e-3
        AdamW learning rate (torch's default weight decay 0.01, as in the reference).
    batch_size : int, default 4096
        (query, relevant record) pairs per step; the other records of a batch are the
        query's negatives. Pairs are reshuffled every epoch; the last batch may be smaller.
    max_steps : int, default 10_000
        Most optimiser steps.
    eval_every : int, default 50
        Validation top-1 accuracy is measured every ``eval_every`` steps (and after the
        last one).
    patience : int, default 1_000
        Stop once this many steps have passed since the best validation accuracy.
    scale : float, default 20.0
        Cosine similarities are multiplied by this before the softmax (1 / temperature).
    warmup_steps : int, default 0
        0: constant learning rate. Otherwise linear warm-up over ``warmup_steps`` and
        linear decay to 0 at ``max_steps`` (the reference config uses 10_000 = the whole run).
    max_drop : float or None, default None
        Also stop when validation accuracy falls more than this below the best (the
        reference uses 0.05).
    seed : int, default 0
        Seeds the pair shuffling.
    block_elements : int, default 2**24
        Validation scores are computed ``block_elements`` at a time (queries × corpus rows).

    Notes
    -----
    Training compares ``normalise(q W)`` with the normalised records by cosine similarity;
    :attr:`Fitted.encode` returns ``normalise(q W)``, searched by inner product against the
    normalised corpus (the same ranking as cosine similarity).
    """

    name = "adaptor"

    def __init__(
        self,
        lr: float = 1e-3,
        batch_size: int = 4096,
        max_steps: int = 10_000,
        eval_every: int = 50,
        patience: int = 1_000,
        scale: float = 20.0,
        warmup_steps: int = 0,
        max_drop: float | None = None,
        seed: int = 0,
        block_elements: int = 1 << 24,
    ) -> None:
        for value, what in [(batch_size, "batch_size"), (eval_every, "eval_every")]:
            if value < 1:
                raise ValueError(f"adaptor: {what} must be >= 1, got {value}")
        for value, what in [(max_steps, "max_steps"), (patience, "patience")]:
            if value < 0:
                raise ValueError(f"adaptor: {what} must be >= 0, got {value}")
        if warmup_steps < 0:
            raise ValueError(f"adaptor: warmup_steps must be >= 0, got {warmup_steps}")
        self.lr = lr
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.patience = patience
        self.scale = scale
        self.warmup_steps = warmup_steps
        self.max_drop = max_drop
        self.seed = seed
        self.block_elements = block_elements

    def fit(self, task: Task) -> Fitted:
        """Train ``W`` on ``task.train`` pairs, keeping the best ``W`` on ``task.val``.

        Returns
        -------
        Fitted
            ``corpus``: the normalised corpus (the task's own array when its rows already
            have unit norm, so a memory map stays on disk); ``encode``: normalised ``q W``;
            ``info``: ``W``, ``best_step``, ``val_accuracy`` (at ``best_step``),
            ``steps`` (steps run), ``stopped_early`` and ``validation_curve``
            (``{"step": [...], "accuracy": [...]}``).
        """
        import torch
        import torch.nn.functional as F

        device = torch_device(task.device)
        corpus = unit_rows(task.corpus)
        d = corpus.shape[1]
        train_q = check_matrix(task.train.queries, "train queries", dim=d)
        val_q = check_matrix(task.val.queries, "validation queries", dim=d)
        check_val_labels(task.val.relevance)
        rel = task.train.relevance
        if rel.nnz == 0:
            raise ValueError("train labels: no training query has a relevant record")

        # one training pair per (query, relevant record), as in the reference
        pair_q = torch.tensor(train_q[rel.query_of_entry()], device=device)
        records = np.asarray(corpus[rel.indices], dtype=np.float32)
        pair_r = F.normalize(torch.tensor(records, device=device), dim=1)
        n_pairs = len(pair_q)
        val_t = torch.tensor(val_q, device=device)
        generator = torch.Generator().manual_seed(self.seed)

        w = torch.nn.Parameter(torch.eye(d, device=device))
        optimizer = torch.optim.AdamW([w], lr=self.lr)
        scheduler = (
            torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
            if self.warmup_steps > 0
            else None
        )

        def accuracy() -> float:
            with torch.no_grad():
                top1 = top1_rows(val_t @ w, corpus, self.block_elements)
            return top1_accuracy(top1, task.val.relevance)

        curve: dict[str, list[Any]] = {"step": [], "accuracy": []}
        best_w, best_acc, best_step = w.detach().clone(), -1.0, 0
        stopped_early = False
        order, pos, step = torch.empty(0, dtype=torch.long), n_pairs, 0
        while True:
            if step % self.eval_every == 0 or step == self.max_steps:
                acc = accuracy()
                curve["step"].append(step)
                curve["accuracy"].append(acc)
                if acc > best_acc:  # strict: the earliest of equally good steps wins
                    best_w, best_acc, best_step = w.detach().clone(), acc, step
                elif step - best_step >= self.patience or (
                    self.max_drop is not None and best_acc - acc > self.max_drop
                ):
                    stopped_early = step < self.max_steps
                    break
            if step == self.max_steps:
                break
            if pos >= n_pairs:  # new epoch
                order, pos = torch.randperm(n_pairs, generator=generator).to(device), 0
            batch = order[pos : pos + self.batch_size]
            pos += self.batch_size
            adapted = F.normalize(pair_q[batch] @ w, dim=1)
            scores = adapted @ pair_r[batch].T * self.scale
            # in-batch softmax: pair i's record is the right answer among the batch's records
            loss = F.cross_entropy(scores, torch.arange(len(batch), device=device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1

        w_np = best_w.cpu().numpy().astype(np.float32)

        def encode(split: Split) -> np.ndarray:
            return normalise(np.asarray(split.queries, dtype=np.float32) @ w_np)

        return Fitted(
            corpus,
            encode,
            None,
            {
                "W": w_np,
                "best_step": best_step,
                "val_accuracy": best_acc,
                "steps": step,
                "stopped_early": stopped_early,
                "validation_curve": curve,
            },
        )

    def _lr_factor(self, step: int) -> float:
        # transformers.get_linear_schedule_with_warmup, as in the reference
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return max(0.0, (self.max_steps - step) / max(1, self.max_steps - self.warmup_steps))


# -- helpers shared with ptft (and useful to any method that searches by top-1) -------------


def torch_device(device: str | None) -> str:
    """The torch device for a nudgekit device name (``None``/``"cpu"``/``"torch"`` → CPU)."""
    return "cpu" if device in (None, "cpu", "torch") else device


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def unit_rows(corpus: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """The corpus with L2-normalised rows, checked for NaN/inf and zero rows.

    A corpus whose rows already have unit norm is returned as it is (a memory map is not
    copied into memory); otherwise a normalised float32 copy.
    """
    if corpus.ndim != 2 or corpus.shape[0] == 0:
        raise ValueError(f"corpus: expected a non-empty 2-D matrix, got shape {corpus.shape}")
    n = corpus.shape[0]
    unit = True
    for start in range(0, n, block_rows):
        norms = check_rows(np.asarray(corpus[start : start + block_rows]), "corpus", start)
        unit = unit and bool(np.all(np.abs(norms - 1.0) <= _UNIT_TOLERANCE))
    if unit:
        return corpus
    out = np.empty(corpus.shape, dtype=np.float32)
    for start in range(0, n, block_rows):
        out[start : start + block_rows] = normalise(corpus[start : start + block_rows])
    return out


def check_val_labels(relevance: Relevance) -> None:
    """Validation accuracy needs a relevant record for every validation query."""
    unlabelled = np.flatnonzero(relevance.counts() == 0)
    if len(unlabelled):
        raise ValueError(f"validation labels: query {int(unlabelled[0])} has no relevant record")


def top1_rows(queries: torch.Tensor, corpus: np.ndarray, block_elements: int) -> np.ndarray:
    """Each query's best corpus row by inner product (ties: lowest row), in blocks.

    ``corpus`` stays a numpy array (or memory map) read ``block_elements / n_queries`` rows
    at a time, so no ``n_queries × N`` score matrix is ever held.
    """
    import torch

    n_queries = len(queries)
    rows = max(1, block_elements // max(1, n_queries))
    best = torch.full((n_queries,), -torch.inf, device=queries.device)
    arg = torch.zeros(n_queries, dtype=torch.long, device=queries.device)
    for start in range(0, corpus.shape[0], rows):
        block = np.ascontiguousarray(corpus[start : start + rows], dtype=np.float32)
        if not block.flags.writeable:  # a read-only memory map: torch wants its own copy
            block = block.copy()
        scores = queries @ torch.from_numpy(block).to(queries.device).T
        value, index = scores.max(dim=1)  # first maximum: lowest row within the block
        better = value > best  # strict: an earlier block keeps ties
        best = torch.where(better, value, best)
        arg = torch.where(better, index + start, arg)
    return arg.cpu().numpy()


def top1_accuracy(top1: np.ndarray, relevance: Relevance) -> float:
    """Fraction of queries whose top-ranked row is relevant."""
    return retrieval_metrics(np.asarray(top1)[:, None], relevance, ks=(1,))["accuracy@1"]
