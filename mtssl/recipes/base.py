"""What a recipe is. The trainer reads nothing else from it.

A loss term is a callable ``term(ctx) -> {loss name: scalar}``. It declares what it needs, and
:class:`Recipe` checks the declarations when it is built (so ``--dry-run`` and a composed YAML recipe
catch a mismatch before any step):

- ``reads``: the outputs it reads (``("sdf", "seg")``; ``"seg/1"`` for a second decoder); each must
  belong to one of the recipe's heads;
- ``needs_teacher``: True when it reads an EMA teacher's outputs; the recipe must then have one;
- ``check(task_names)``: an optional hook given ``{head: task name}`` that raises a
  :class:`~mtssl.config.ConfigError` for options that do not fit the heads' tasks.

A term without ``reads`` (one written in Python and not declared) is not checked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from mtssl.tasks.outputs import flat, head_of
from mtssl.terms.context import StepContext
from mtssl.terms.schedules import Schedule, build_schedule

__all__ = ["Recipe", "Teacher", "Term", "ramp", "term_names"]

LossTerm = Callable[[StepContext], Mapping[str, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class Term:
    """A loss term and the schedule of its weight."""

    fn: LossTerm
    weight: Schedule = dataclasses.field(default_factory=Schedule)

    @classmethod
    def of(cls, fn: LossTerm, weight: float | Mapping[str, Any] | Schedule = 1.0) -> Term:
        return cls(fn, build_schedule(weight))

    @property
    def name(self) -> str:
        """The term's one name: its ``weight/<name>`` in the log and the prefix of its ``loss/<name>...``
        entries. A built-in term sets ``name`` (``seg`` for the supervised term on ``seg``, whose losses are
        ``seg_dice`` and ``seg_ce``; ``consistency_sdf_seg``; ``pseudo``); a term without one is called by
        its function's or class's name (snake case) with the head it acts on."""
        named = getattr(self.fn, "name", None)
        if isinstance(named, str):
            return named
        base = getattr(self.fn, "__name__", None) or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self.fn).__name__).lower()
        output = getattr(self.fn, "output", None)
        return f"{base}_{flat(output)}" if isinstance(output, str) else base


@dataclasses.dataclass(frozen=True, kw_only=True)
class Teacher:
    """An EMA copy of the model: decay, with warm-up ``min(1 - 1/(t + 1), decay)``, and its mode."""

    decay: float = 0.99
    mode: Literal["train", "eval"] = "train"

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay <= 1.0:  # also refuses NaN
            from mtssl.config import ConfigError

            raise ConfigError(f"teacher decay must lie in [0, 1] (0.99 in the literature), got {self.decay}")


def term_names(terms: Sequence[Term]) -> list[str]:
    """Each term's :attr:`Term.name`, with ``_2``, ``_3``, ... where two terms share one."""
    seen: dict[str, int] = {}
    names = []
    for term in terms:
        seen[term.name] = seen.get(term.name, 0) + 1
        names.append(term.name if seen[term.name] == 1 else f"{term.name}_{seen[term.name]}")
    return names


def check_terms(tasks: Mapping[str, Mapping[str, Any]], terms: Sequence[Term], teacher: Teacher | None) -> None:
    """Each term's declarations (the module doc) against the recipe's heads and teacher: a head that no
    task defines, a teacher that is missing, options that do not fit a head's task are config errors."""
    from mtssl.config import ConfigError

    task_names = {head: str(options.get("task", head)) for head, options in tasks.items()}
    for name, term in zip(term_names(terms), terms):
        reads = getattr(term.fn, "reads", None)
        missing = [out for out in reads or () if head_of(out) not in tasks]
        if missing:
            raise ConfigError(
                f"the term {name} reads the output {missing[0]!r}, but no head {head_of(missing[0])!r} "
                f"exists; the recipe's heads (recipe.tasks) are {', '.join(tasks)}"
            )
        if getattr(term.fn, "needs_teacher", False) and teacher is None:
            raise ConfigError(
                f"the term {name} reads an EMA teacher, and the recipe has none: add one (recipe.teacher: "
                "{decay: 0.99} in a composed recipe) or choose a term that needs none"
            )
        check = getattr(term.fn, "check", None)
        if callable(check):
            check(task_names)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """A model spec plus weighted loss terms.

    Attributes:
        tasks: head name -> task options (``task:`` names the task when it differs from the head).
        terms: the weighted loss terms; the total loss is their weighted sum.
        teacher: an EMA teacher, or None.
        evaluate: the output whose segmentation is tested (``"seg"``; ``"seg/1"`` for a second decoder).
        backbone: the default backbone (a config's ``model.backbone`` overrides its options).
    """

    tasks: Mapping[str, Mapping[str, Any]]
    terms: tuple[Term, ...]
    teacher: Teacher | None = None
    evaluate: str = "seg"
    backbone: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"name": "vnet"})

    def __post_init__(self) -> None:
        check_terms(self.tasks, self.terms, self.teacher)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether a term reads unlabeled samples (or a teacher runs on them): a recipe of supervised
        terms only (``labeled_only`` on its term) wastes every unlabeled sample in a batch."""
        return self.teacher is not None or not all(getattr(t.fn, "labeled_only", False) for t in self.terms)

    def for_run(self, iterations: int) -> Recipe:
        """This recipe with every weight schedule set as a fraction of the run (``until``) fixed for a run
        of ``iterations`` (:meth:`~mtssl.terms.schedules.Schedule.for_run`)."""
        terms = tuple(dataclasses.replace(t, weight=t.weight.for_run(iterations)) for t in self.terms)
        return dataclasses.replace(self, terms=terms)


def ramp(c: float, divisor: int | None = None, until: float = 1.0) -> dict:
    """The literature's sigmoid ramp-up to ``c`` in 40 steps: full at the fraction ``until`` of the run
    (``divisor = until * iterations / 40``, 150 for LA's 6000 iterations at ``until = 1``), or, with
    ``divisor``, at ``40 * divisor`` iterations whatever the run's length."""
    if divisor is not None:
        return {"schedule": "sigmoid", "c": c, "divisor": divisor, "length": 40}
    return {"schedule": "sigmoid", "c": c, "until": until, "length": 40}
