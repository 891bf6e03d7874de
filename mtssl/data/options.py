"""The options that every data set takes, defined and documented here once.

A data set's factory lists them as typed keywords, so that the registry validates them like its own
(``mtssl list dataset`` shows each data set's defaults), and is decorated with :func:`shared_options`,
which appends their one description to its Args section and refuses, when the module is imported,
a factory whose type for one of them drifts from the one here. ``docs/data.md`` shows this table.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar

__all__ = ["SHARED", "shared_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: name -> (its type, or None where each data set types it for its rank, and its meaning).
SHARED: dict[str, tuple[Any, str]] = {
    "labeled": (
        int | str | None,
        "which training cases keep their labels: a count (the first N, or N at random with "
        "``selection: random``), a list file of case ids, or null for every case that has a label; "
        "the other training cases are the unlabeled ones",
    ),
    "selection": (
        Literal["first", "random"],
        "how a count of labeled cases is chosen: ``first`` (the literature's: the first N in the data set's "
        "order) or ``random`` (seeded by ``seed``)",
    ),
    "val": (
        float | str | None,
        "validation cases, held out of the labeled ones and scored for model selection "
        "(``eval.select: val``): a fraction (seeded) or a list file; null for none",
    ),
    "patch": (None, "the training crop, one size per spatial axis (the data set's default fits its data)"),
    "augment": (
        tuple[str | dict[str, Any], ...],
        "the augmentation steps, in order (:class:`mtssl.data.augment.Augment`; ``mtssl list`` shows each data set's)",
    ),
    "fg_crop_prob": (
        float,
        "the probability that a labeled sample's crop is centred on a foreground voxel (nnU-Net's "
        "oversampling); 0 crops uniformly",
    ),
    "seed": (int, "seeds every random choice of the split (``selection: random``, a ``val`` fraction)"),
}


def shared_options(*names: str) -> Callable[[F], F]:
    """Declare that a data-set factory takes the shared options ``names``: their descriptions are appended
    to its docstring, and a type that differs from :data:`SHARED`'s is a ``TypeError`` at import."""
    unknown = [n for n in names if n not in SHARED]
    if unknown:
        raise TypeError(f"{unknown[0]!r} is not a shared data-set option; the shared ones are {', '.join(SHARED)}")

    def decorate(factory: F) -> F:
        hints = typing.get_type_hints(factory)
        params = inspect.signature(factory).parameters
        for name in names:
            expected = SHARED[name][0]
            if name not in params:
                raise TypeError(f"{factory.__qualname__} declares the shared option {name!r} but does not take it")
            if expected is not None and hints.get(name) != expected:
                raise TypeError(
                    f"{factory.__qualname__}'s {name} is typed {hints.get(name)}, the shared option's type is "
                    f"{expected} (mtssl.data.options.SHARED)"
                )
        doc = inspect.cleandoc(factory.__doc__ or "")
        if not doc.split("\n\n")[-1].startswith("Args:"):
            raise TypeError(f"{factory.__qualname__}'s docstring must end with its Args section")
        shared = "".join(f"\n    {name}: {SHARED[name][1]} (shared: :mod:`mtssl.data.options`)." for name in names)
        factory.__doc__ = doc + shared
        return factory

    return decorate
