"""The math of NUDGE: pure array-in / array-out functions and the estimators.

Nothing here reads files or talks to a store; numpy is the only requirement (torch is
used when a torch device is asked for).
"""

from nudgekit.core._backend import get_backend
from nudgekit.core._estimators import NudgeM, NudgeN
from nudgekit.core._relevance import Relevance
from nudgekit.core.clustered import NudgeNClustered
from nudgekit.core.iterative import NudgeIM, NudgeIN
from nudgekit.core.nudge_mn import NudgeMN
from nudgekit.core.nudge_s import NudgeS

__all__ = [
    "NudgeIM",
    "NudgeIN",
    "NudgeM",
    "NudgeMN",
    "NudgeN",
    "NudgeNClustered",
    "NudgeS",
    "Relevance",
    "get_backend",
]
