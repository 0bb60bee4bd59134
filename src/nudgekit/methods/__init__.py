"""Every fine-tuning method: the registry (:mod:`.registry`) and the bench interface.

NUDGE methods are core estimators (:mod:`nudgekit.core`); the baselines — ``none``,
``adaptor``, ``ptft`` and the hybrids — live here, one module each, behind
:class:`~nudgekit.methods.base.Method`.
"""

from nudgekit.methods.base import Fitted, Method, Task, Texts, raw_queries
from nudgekit.methods.registry import (
    DEFAULT_METHOD,
    METHODS,
    MethodSpec,
    get_method,
    method_spec,
    nudge_method_names,
)

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Fitted",
    "Method",
    "MethodSpec",
    "Task",
    "Texts",
    "get_method",
    "method_spec",
    "nudge_method_names",
    "raw_queries",
]
