"""Recipes written in the config alone: heads, terms by registry name, weights and schedules.

.. code-block:: yaml

    recipe:
      name: composed
      tasks:
        seg: {task: seg}
        dist: {task: dist, radius: 3.0}
      terms:
        - {term: supervised, output: seg}
        - {term: supervised, output: dist}
        - {term: cross_task, source: dist, target: seg, weight: {schedule: sigmoid, c: 0.5}}
        - {term: cross_task, source: seg, target: dist, weight: {schedule: sigmoid, c: 0.5}}

Each term is ``{term: <a registered term>, weight: <a number or a schedule>, **its options}``, and
is validated like every other section: an unknown term lists the known ones, an unknown option the
term's options, a head that no task defines the recipe's heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtssl.config import ConfigError, build_dataclass
from mtssl.recipes.base import Recipe, Teacher, Term, check_terms
from mtssl.registry import RECIPES, TERMS, RegistryError
from mtssl.tasks.outputs import head_of
from mtssl.terms.schedules import build_schedule

__all__ = ["composed"]


def _term(spec: Mapping[str, Any], where: str, heads: Mapping[str, Any]) -> Term:
    options = dict(spec)
    if "term" not in options:
        raise ConfigError(f"{where} needs a term: one of {', '.join(TERMS.names())}")
    name, weight = options.pop("term"), options.pop("weight", 1.0)
    try:
        fn = TERMS.create(name, **options)
    except (ConfigError, RegistryError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    term = Term(fn, build_schedule(weight, f"{where}.weight"))
    try:  # its heads and options against the recipe's tasks, here to name the term's place in the list
        check_terms(heads, [term], Teacher())
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return term


@RECIPES.register("composed")
def composed(
    *,
    tasks: dict[str, dict[str, Any]],
    terms: tuple[dict[str, Any], ...],
    teacher: dict[str, Any] | None = None,
    evaluate: str = "seg",
    backbone: dict[str, Any] | None = None,
) -> Recipe:
    """A recipe written in the config: ``tasks`` (head -> task options, ``task:`` naming the task when
    it is not the head's name), ``terms`` (each ``{term, weight, **options}``), an optional EMA
    ``teacher`` (``{decay, mode}``), the tested output and the default backbone (``vnet``)."""
    if not tasks:
        raise ConfigError("recipe.tasks needs at least one head, e.g. {seg: {task: seg}}")
    if not terms:
        raise ConfigError("recipe.terms needs at least one term, e.g. [{term: supervised, output: seg}]")
    built = tuple(_term(spec, f"recipe.terms[{i}]", tasks) for i, spec in enumerate(terms))
    if head_of(evaluate) not in tasks:
        raise ConfigError(f"recipe.evaluate: no head {evaluate!r}; the recipe's heads are {', '.join(tasks)}")
    return Recipe(
        tasks=tasks,
        terms=built,
        teacher=build_dataclass(Teacher, teacher, "recipe.teacher") if teacher is not None else None,
        evaluate=evaluate,
        backbone=backbone or {"name": "vnet"},
    )
