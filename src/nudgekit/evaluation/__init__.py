"""Retrieval quality: exact k-NN search over a corpus or a block source, and the metrics."""

from nudgekit.evaluation.metrics import (
    evaluate,
    per_query_ndcg,
    relevant_ranks,
    retrieval_metrics,
)
from nudgekit.evaluation.retrieval import TopK, search, search_source

__all__ = [
    "TopK",
    "evaluate",
    "per_query_ndcg",
    "relevant_ranks",
    "retrieval_metrics",
    "search",
    "search_source",
]
