"""Supervised-only training: Dice + CE on the labeled samples (the literature's V-Net baseline)."""

from __future__ import annotations

from mtssl.recipes.base import Recipe, Teacher, Term
from mtssl.registry import RECIPES
from mtssl.strategies.supervised import Supervised

__all__ = ["supervised"]


@RECIPES.register("supervised")
def supervised(dice: float = 1.0, ce: float = 1.0, softmax: bool = False, ema_teacher: bool = False) -> Recipe:
    """Dice + CE of the seg head on the labeled samples only.

    Args:
        dice: weight of the Dice loss.
        ce: weight of the cross-entropy.
        softmax: a softmax head with a background channel (UA-MT's V-Net) instead of sigmoids.
        ema_teacher: keep an EMA teacher (decay 0.99) as well; nothing trains on it, but it is
            checkpointed and restored like any recipe's teacher.
    """
    return Recipe(
        tasks={"seg": {"task": "seg", "softmax": softmax}},
        terms=(Term.of(Supervised("seg", dice, ce)),),
        teacher=Teacher() if ema_teacher else None,
    )
