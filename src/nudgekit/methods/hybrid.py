"""Hybrids: one method fitted in the space another method produces (``adaptor+nudge-n`` ...).

``first+second`` fits ``first``, maps the training and validation queries into its space
with its ``encode``, fits ``second`` on its corpus and those queries, and searches
``second``'s corpus with both encodings applied in turn. NUDGE leaves queries as they are,
so for ``x+nudge-n`` the queries are ``x``'s and the records are ``x``'s, nudged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from nudgekit.io.dataset import Split
from nudgekit.methods.base import Fitted, Method, Task


class Hybrid(Method):
    """``second`` fitted on the embeddings ``first`` produces.

    Parameters
    ----------
    first, second : mapping, optional
        Constructor parameters of the two methods, e.g.
        ``get_method("adaptor+nudge-n", first={"max_steps": 500}, second={"gamma": 0.1})``.

    Notes
    -----
    :attr:`Fitted.info` holds ``{"first": first's info, "second": second's info}``;
    :attr:`Fitted.gamma` is ``second``'s.
    """

    #: the parts' names, and how to make each from its parameters (set by :func:`hybrid`)
    first_name: ClassVar[str]
    second_name: ClassVar[str]
    make: ClassVar[Callable[..., Method]]

    def __init__(
        self, first: Mapping[str, Any] | None = None, second: Mapping[str, Any] | None = None
    ) -> None:
        self.first_params = dict(first or {})
        self.first_method = type(self).make(self.first_name, **self.first_params)
        self.second_method = type(self).make(self.second_name, **dict(second or {}))

    def fit(self, task: Task) -> Fitted:
        """Fit ``first`` on ``task``, then ``second`` in ``first``'s space."""
        return self.fit_after(task, self.first_method.fit(task))

    def fit_after(self, task: Task, one: Fitted) -> Fitted:
        """Fit ``second`` in the space of ``one``: ``first`` already fitted on ``task``.

        Lets a benchmark that also runs ``first`` alone (same parameters, same task) reuse
        that fit instead of training it twice.
        """
        inner = replace(
            task,
            corpus=one.corpus,
            train=encoded(task.train, one),
            val=encoded(task.val, one),
        )
        two = self.second_method.fit(inner)

        def encode(split: Split) -> np.ndarray:
            return two.encode(encoded(split, one))

        return Fitted(two.corpus, encode, two.gamma, {"first": one.info, "second": two.info})


def hybrid(first: str, second: str, make: Callable[..., Method]) -> type[Hybrid]:
    """The :class:`Hybrid` method class named ``"first+second"``; ``make(name, **params)``
    builds each part (:func:`nudgekit.methods.get_method`)."""
    return type(
        f"Hybrid_{first}_{second}".replace("-", "_"),
        (Hybrid,),
        {
            "name": f"{first}+{second}",
            "first_name": first,
            "second_name": second,
            "make": staticmethod(make),
            "__module__": __name__,
            "__doc__": f"``{first}``, then ``{second}`` on its embeddings.",
        },
    )


def encoded(split: Split, fitted: Fitted) -> Split:
    """``split`` with its queries in ``fitted``'s space (same ids and labels)."""
    return replace(split, queries=np.asarray(fitted.encode(split), dtype=np.float32))
