"""The math of NUDGE: pure array-in / array-out functions and two estimators.

Nothing here reads files or talks to a store; numpy is the only requirement (torch is
used when a torch device is asked for).
"""

from nudgekit.core._backend import get_backend
from nudgekit.core._estimators import NudgeM, NudgeN
from nudgekit.core._relevance import Relevance

__all__ = ["NudgeM", "NudgeN", "Relevance", "get_backend"]
