"""A grid: recipes x label counts x seeds over one base config, each cell a run folder."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtssl.config import ConfigError, apply_overrides, build_dataclass, load_config, load_yaml

__all__ = ["Cell", "Grid", "load_grid"]


@dataclasses.dataclass(frozen=True)
class Grid:
    """What a grid file holds.

    Attributes:
        base: the run config every cell starts from (a path relative to the grid file).
        recipes: a name per row of the table, mapped to config sections merged over the base
            (``{recipe: {name: dbisl, radius: 3.0}}``; an empty mapping uses ``recipe.name = <key>``).
        labels: labeled-case counts.
        seeds: training seeds.
        vary_subset: also let the seed choose which cases are labeled (default: the literature's first N).
        overrides: ``key=value`` overrides applied to every cell.
        baseline: the row that paired statistics compare against.
        slurm: per-cell resources for ``--launcher slurm`` (:class:`mtssl.bench.slurm.SlurmOptions`).
    """

    base: str
    recipes: dict[str, dict[str, Any]]
    labels: list[int]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1337])
    vary_subset: bool = False
    overrides: list[str] = dataclasses.field(default_factory=list)
    baseline: str | None = None
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    recipe: str
    labels: int
    seed: int
    config: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.recipe}/labels{self.labels}/seed{self.seed}"


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def load_grid(path: str | Path, only: str | None = None, overrides: Sequence[str] = ()) -> tuple[Grid, list[Cell]]:
    """The grid in ``path`` and its cells (those whose id matches the ``only`` wildcard, if given).

    ``overrides`` (``key=value``) apply to every cell after the grid's own.
    """
    path = Path(path)
    grid = build_dataclass(Grid, load_yaml(path), where="grid")
    if grid.baseline is not None and grid.baseline not in grid.recipes:
        raise ConfigError(f"grid.baseline {grid.baseline!r} is not one of the recipes: {', '.join(grid.recipes)}")
    base = load_config(path.parent / grid.base, [*grid.overrides, *overrides])
    cells = []
    for recipe, sections in grid.recipes.items():
        for labels in grid.labels:
            for seed in grid.seeds:
                entry = dict(sections or {})
                wanted = {"name": recipe, **dict(entry.pop("recipe", None) or {})}
                config = _merge(base, entry)
                # The base's recipe options carry over only to the same recipe.
                same = config.get("recipe", {}).get("name") == wanted["name"]
                config["recipe"] = {**config["recipe"], **wanted} if same else wanted
                subset = ["data.selection=random", f"data.seed={seed}"] if grid.vary_subset else []
                config = apply_overrides(config, [f"data.labeled={labels}", f"train.seed={seed}", *subset])
                cell = Cell(recipe, labels, seed, config)
                if only is None or fnmatch.fnmatchcase(cell.id, only):
                    cells.append(cell)
    return grid, cells
