"""The one registry of methods: name → what fits it, and the traits other layers ask about.

The CLI's choices, ``bench``, ``apply``'s metric guard, the report and the quickstart all
read :data:`METHODS`; nothing else tests a method by its name. A NUDGE method has an
estimator (:class:`~nudgekit.core.NudgeEstimator`): ``fit``, ``apply`` and the engines
take it. Every method, NUDGE or baseline, runs in ``bench``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nudgekit.core import (
    NudgeCV,
    NudgeEstimator,
    NudgeIM,
    NudgeIN,
    NudgeM,
    NudgeMN,
    NudgeN,
    NudgeNClustered,
    NudgeS,
)
from nudgekit.methods.adaptor import Adaptor
from nudgekit.methods.base import Method
from nudgekit.methods.estimator import EstimatorMethod
from nudgekit.methods.hybrid import hybrid
from nudgekit.methods.none import NoFineTuning
from nudgekit.methods.ptft import PTFT


@dataclass(frozen=True)
class MethodSpec:
    """A method and its traits.

    Attributes
    ----------
    name : str
        What the CLI and ``bench`` call it.
    summary : str
        One line for ``--help`` and listings.
    estimator : NudgeEstimator subclass, optional
        For NUDGE methods (``fit``, ``apply``, the engines).
    method : Method subclass, optional
        For the baselines (``bench`` only).
    unit_norm : bool
        Outputs stay unit-norm, so any metric (cosine, l2, dot) ranks them as intended;
        False: search them by dot product only.
    needs_texts : bool
        Re-embeds texts with the model (``bench --beir --model``).
    """

    name: str
    summary: str
    estimator: type[NudgeEstimator] | None = None
    method: type[Method] | None = None
    unit_norm: bool = True
    needs_texts: bool = False

    @property
    def is_nudge(self) -> bool:
        """A NUDGE estimator: fitted with one corpus pass; ``fit`` and ``apply`` take it."""
        return self.estimator is not None

    @property
    def label(self) -> str:
        """The name as prose writes it (``NUDGE-M``, ``adaptor``)."""
        return self.name.upper() if self.is_nudge else self.name

    def parameters(self) -> list[str]:
        """The constructor parameters ``bench --param`` and ``get_method`` accept."""
        target = self.estimator if self.estimator is not None else self.method
        return [
            p.name
            for p in inspect.signature(target).parameters.values()  # type: ignore[arg-type]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def make_method(self, **params: Any) -> Method:
        """An instance behind the bench interface (:class:`~nudgekit.methods.base.Method`)."""
        if self.estimator is not None:
            return EstimatorMethod(self.estimator, self.name, **params)
        return self.method(**params)  # type: ignore[misc]

    def make_estimator(
        self,
        *,
        gamma: float | None = None,
        val_k: int = 1,
        device: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> NudgeEstimator:
        """The unfitted estimator with the CLI's options and further ``params`` (``--param``),
        every one checked."""
        params = dict(params or {})
        if self.estimator is None:
            raise ValueError(
                f"{self.name} is a baseline for `nudgekit bench`, not a NUDGE method; "
                f"fit and apply take: {', '.join(nudge_method_names())}"
            )
        accepted = self.parameters()
        if val_k != 1 and "val_k" not in accepted:
            takers = [n for n in nudge_method_names() if "val_k" in METHODS[n].parameters()]
            raise ValueError(
                f"--val-k does not apply to {self.name}; methods with --val-k: {', '.join(takers)}"
            )
        for name in params:
            if name in ("gamma", "val_k", "device"):
                raise ValueError(f"--param {name}: use --{name.replace('_', '-')}")
            if name not in accepted:
                rest = [p for p in accepted if p not in ("gamma", "val_k", "device")]
                raise ValueError(
                    f"{self.name} has no parameter {name!r}; its parameters: {', '.join(rest)}"
                )
        kwargs = dict(params, gamma=gamma, device=device)
        if "val_k" in accepted:
            kwargs["val_k"] = val_k
        model = self.estimator(**kwargs)
        try:
            model.check_params()
        except TypeError as error:  # a value of the wrong kind, e.g. gammas=0.1
            raise ValueError(f"{self.name}: a parameter of the wrong type ({error})") from None
        return model


def get_method(name: str, **params: Any) -> Method:
    """An instance of method ``name`` behind the bench interface."""
    return method_spec(name).make_method(**params)


def method_spec(name: str, *, nudge: bool = False) -> MethodSpec:
    """The spec of ``name``; ``nudge``: it must be a NUDGE method (``fit``/``apply``)."""
    names = nudge_method_names() if nudge else sorted(METHODS)
    spec = METHODS.get(name)
    if spec is None or (nudge and not spec.is_nudge):
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(names)}")
    return spec


def nudge_method_names() -> list[str]:
    """The methods ``fit`` and ``apply`` take, main ones first."""
    return [n for n, s in METHODS.items() if s.is_nudge]


def _hybrid(first: str, second: str) -> MethodSpec:
    one, two = METHODS[first], METHODS[second]
    return MethodSpec(
        f"{first}+{second}",
        f"{first}, then {second} on its embeddings",
        method=hybrid(first, second, get_method),
        unit_norm=two.unit_norm,
        needs_texts=one.needs_texts or two.needs_texts,
    )


#: what fit, apply and quickstart use when no method is named
DEFAULT_METHOD = "nudge-cv"

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "nudge-cv",
            "the default: NUDGE-N or shrink by 5-fold CV over train+val, refit on all",
            NudgeCV,
        ),
        MethodSpec("nudge-n", "NUDGE-N as in the paper: unit-norm, ‖Δ‖² ≤ γ, γ on a grid", NudgeN),
        MethodSpec(
            "nudge-m", "NUDGE-M: Δ = γ·Ĝ, exact best γ; search by dot product", NudgeM,
            unit_norm=False,
        ),
        MethodSpec("nudge-mn", "NUDGE-M, then normalised (γ on a grid)", NudgeMN),
        MethodSpec(
            "nudge-s", "NUDGE-S: L1-bounded moves, exact best γ; dot product", NudgeS,
            unit_norm=False,
        ),
        MethodSpec(
            "nudge-im", "NUDGE-M's problem by gradient ascent; dot product", NudgeIM,
            unit_norm=False,
        ),
        MethodSpec("nudge-in", "NUDGE-N's problem by gradient ascent", NudgeIN),
        MethodSpec(
            "nudge-n-clustered", "NUDGE-N with one γ per k-means cluster", NudgeNClustered
        ),
        MethodSpec("none", "no fine-tuning", method=NoFineTuning),
        MethodSpec("adaptor", "linear query adaptor (baseline)", method=Adaptor),
        MethodSpec("ptft", "fine-tune the embedding model (baseline)", method=PTFT,
                   needs_texts=True),
    )
}  # fmt: skip
METHODS.update({s.name: s for s in (_hybrid("adaptor", "nudge-n"), _hybrid("ptft", "nudge-n"))})
