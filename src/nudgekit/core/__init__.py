"""The math of NUDGE: array-in / array-out functions, the corpus pass and the estimators.

Nothing here reads files or talks to a store; numpy is the only requirement (torch is
used when a torch device is asked for). Where things are:

- :mod:`.estimator` — :class:`NudgeEstimator`, the seam every method and engine uses;
- :mod:`.corpus_pass` — the one pass over a corpus (:mod:`.blocks`: block sources and the
  row check);
- :mod:`.nudge_n`, :mod:`.nudge_m` — the two methods (closed forms, where γ is chosen);
- :mod:`.nudge_mn`, :mod:`.nudge_s`, :mod:`.iterative`, :mod:`.clustered` — the variants.
"""

from nudgekit.core.backend import Backend, get_backend
from nudgekit.core.blocks import (
    ArraySource,
    Block,
    BlockSource,
    CorpusError,
    checked_rows,
    corpus_shape,
    normalised_rows,
)
from nudgekit.core.checks import (
    check_gamma,
    check_matrix,
    check_relevance,
    check_rows,
    first_bad_row,
    row_norms,
)
from nudgekit.core.clustered import NudgeNClustered
from nudgekit.core.corpus_pass import (
    BlockResult,
    BlockScanner,
    PassCollector,
    PassPlan,
    PassResult,
    contains,
    corpus_pass,
    id_bytes_of,
    merge_top_k,
)
from nudgekit.core.estimator import (
    FitProblem,
    GammaChoice,
    LabelledQueries,
    NudgeEstimator,
    PassRunner,
    ProgressCallback,
    phase_counter,
)
from nudgekit.core.iterative import NudgeIM, NudgeIN
from nudgekit.core.nudge_cv import NudgeCV
from nudgekit.core.nudge_m import NudgeM
from nudgekit.core.nudge_mn import NudgeMN
from nudgekit.core.nudge_n import NudgeN
from nudgekit.core.nudge_s import NudgeS
from nudgekit.core.relevance import Relevance, relevance_from_qrels

__all__ = [
    "ArraySource",
    "Backend",
    "Block",
    "BlockResult",
    "BlockScanner",
    "BlockSource",
    "CorpusError",
    "FitProblem",
    "GammaChoice",
    "LabelledQueries",
    "NudgeCV",
    "NudgeEstimator",
    "NudgeIM",
    "NudgeIN",
    "NudgeM",
    "NudgeMN",
    "NudgeN",
    "NudgeNClustered",
    "NudgeS",
    "PassCollector",
    "PassPlan",
    "PassResult",
    "PassRunner",
    "ProgressCallback",
    "Relevance",
    "check_gamma",
    "check_matrix",
    "check_relevance",
    "check_rows",
    "checked_rows",
    "contains",
    "corpus_pass",
    "corpus_shape",
    "first_bad_row",
    "get_backend",
    "id_bytes_of",
    "merge_top_k",
    "normalised_rows",
    "phase_counter",
    "relevance_from_qrels",
    "row_norms",
]
