"""nudgekit — fine-tune embeddings for k-NN retrieval without touching the model.

An implementation of NUDGE (Zeighami, Wellmer, Parameswaran, ICLR 2025): move the
embeddings of the records that training queries point to, within a constraint, with the
step size chosen on validation queries.
"""

from nudgekit.core import NudgeCV, NudgeM, NudgeN, Relevance

__version__ = "0.1.0"

__all__ = ["NudgeCV", "NudgeM", "NudgeN", "Relevance", "__version__"]
