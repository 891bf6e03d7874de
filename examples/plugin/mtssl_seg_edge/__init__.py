"""An example mtssl plugin. Importing it registers the ``seg_edge`` recipe.

mtssl imports this module on the first registry look-up, because the package declares it in the
``mtssl.plugins`` entry-point group (see ``pyproject.toml``).
"""

from __future__ import annotations

from mtssl.recipes.base import Recipe, Term
from mtssl.registry import RECIPES
from mtssl.terms.consistency import CrossTask
from mtssl.terms.supervised import Supervised


@RECIPES.register("seg_edge")
def seg_edge(edge_weight: float = 0.5, consistency: float = 0.3) -> Recipe:
    """Segmentation + boundary: both supervised, and the boundary of the segmentation kept close to the edge head."""
    return Recipe(
        tasks={"seg": {"task": "seg"}, "edge": {"task": "edge"}},
        terms=(
            Term.of(Supervised("seg")),
            Term.of(Supervised("edge"), edge_weight),
            Term.of(CrossTask("seg", "edge"), {"schedule": "sigmoid", "c": consistency}),
        ),
    )
