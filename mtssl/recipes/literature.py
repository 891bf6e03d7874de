"""The literature's recipes (the supervised baseline and the semi-supervised ones), each a short composition
of registered terms.

Weights and schedules are the published code's (docs/recipes.md): the consistency weight ramps as
``c * exp(-5 (1 - min(t // 150, 40) / 40)^2)``, full at the end of the 6000-iteration LA schedule.
Each recipe's ``ramp_divisor`` (150) scales that ramp for a run of another length: a run of N
iterations ramps over it as the literature's runs do with ``ramp_divisor = N / 40``.
"""

from __future__ import annotations

from typing import Literal

from mtssl.recipes.base import Recipe, Teacher, Term, ramp
from mtssl.registry import RECIPES
from mtssl.tasks.outputs import output_name
from mtssl.terms.consistency import CrossTask, MeanTeacher, MultiDecoder, UncertaintyMeanTeacher
from mtssl.terms.supervised import Supervised

__all__ = ["dtc", "mcnet", "mean_teacher", "supervised", "ua_mt"]


@RECIPES.register("supervised")
def supervised(*, dice: float = 1.0, ce: float = 1.0, softmax: bool = False, ema_teacher: bool = False) -> Recipe:
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
        terms=(Term.of(Supervised("seg", dice=dice, ce=ce)),),
        teacher=Teacher() if ema_teacher else None,
    )


@RECIPES.register("mean_teacher")
def mean_teacher(
    *, consistency: float = 0.1, ema_decay: float = 0.99, ramp_until: float = 1.0, ramp_divisor: int | None = None
) -> Recipe:
    """Mean teacher (UA-MT's code): 0.5 (CE + Dice) on labeled samples + ramped MSE to an EMA teacher.

    The teacher sees the unlabeled images plus clamped noise and runs in train mode (dropout on).
    The consistency weight is full at ``40 * ramp_divisor`` iterations (6000, the LA schedule).
    """
    return Recipe(
        tasks={"seg": {"task": "seg", "softmax": True}},
        terms=(
            Term.of(Supervised("seg", dice=0.5, ce=0.5)),
            Term.of(MeanTeacher("seg"), ramp(consistency, ramp_divisor, ramp_until)),
        ),
        teacher=Teacher(decay=ema_decay, mode="train"),
    )


@RECIPES.register("ua_mt")
def ua_mt(
    *,
    consistency: float = 0.1,
    ema_decay: float = 0.99,
    passes: int = 8,
    max_iterations: int = 6000,
    ramp_until: float = 1.0,
    ramp_divisor: int | None = None,
    uncertainty: str = "entropy_below",
) -> Recipe:
    """UA-MT: the mean teacher with consistency masked by the teacher's uncertainty over noisy passes.

    The consistency weight is full at ``40 * ramp_divisor`` iterations, the uncertainty threshold at
    ``max_iterations`` (both 6000, the LA schedule). ``uncertainty`` names the weighting of the passes
    (``mtssl list uncertainty``): UA-MT's ``entropy_below`` mask, or any registered one.
    """
    return Recipe(
        tasks={"seg": {"task": "seg", "softmax": True}},
        terms=(
            Term.of(Supervised("seg", dice=0.5, ce=0.5)),
            Term.of(
                UncertaintyMeanTeacher("seg", passes=passes, max_iterations=max_iterations, uncertainty=uncertainty),
                ramp(consistency, ramp_divisor, ramp_until),
            ),
        ),
        teacher=Teacher(decay=ema_decay, mode="train"),
    )


@RECIPES.register("dtc")
def dtc(
    *,
    consistency: float = 1.0,
    sdf_weight: float = 0.3,
    k: float = 1500.0,
    ramp_until: float = 1.0,
    ramp_divisor: int | None = None,
) -> Recipe:
    """DTC: Dice(seg) + 0.3 MSE(sdf, SDF(y)) on labeled, + ramped ``mean((sigmoid(-k sdf) - sigmoid(seg))^2)``.

    The consistency weight is full at ``40 * ramp_divisor`` iterations (6000, the LA schedule).
    """
    return Recipe(
        tasks={"seg": {"task": "seg"}, "sdf": {"task": "sdf", "k": k}},
        terms=(
            Term.of(Supervised("seg", dice=1.0, ce=0.0)),
            Term.of(Supervised("sdf"), sdf_weight),
            Term.of(CrossTask("sdf", "seg", samples="all"), ramp(consistency, ramp_divisor, ramp_until)),
        ),
    )


@RECIPES.register("mcnet")
def mcnet(
    *,
    decoders: Literal[2, 3] = 2,
    consistency: float = 1.0,
    temperature: float = 0.1,
    ramp_until: float = 1.0,
    ramp_divisor: int | None = None,
) -> Recipe:
    """MC-Net (2 decoders) / MC-Net+ (3): 0.5 * Dice per decoder + ramped mutual consistency to sharpened peers.

    Evaluated on the first decoder, as the reference (which loads it into a plain V-Net). The
    consistency weight is full at ``40 * ramp_divisor`` iterations (6000, the LA schedule).
    """
    up = ("transpose", "linear", "nearest")[:decoders]
    outputs = [output_name("seg", i) for i in range(decoders)]
    return Recipe(
        tasks={"seg": {"task": "seg", "softmax": True}},
        terms=(
            *(Term.of(Supervised(o, dice=0.5, ce=0.0)) for o in outputs),
            Term.of(
                MultiDecoder("seg", decoders=decoders, temperature=temperature),
                ramp(consistency, ramp_divisor, ramp_until),
            ),
        ),
        backbone={"name": "mcnet", "up_sampling": list(up)},
    )
