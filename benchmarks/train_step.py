"""Milliseconds per training step of every recipe, as a ratio to the supervised step in the same run.

    python benchmarks/train_step.py                  # CPU: 2+2 x 32x32x32 crops, V-Net with 8 filters
    python benchmarks/train_step.py --device cuda    # the LA setting: 2+2 x 112x112x80, 16 filters, bf16

DBiSL's step is broken down into the network (forward + backward of its heads' supervised losses),
the exact targets, the soft SDF (seg->sdf forward + backward) and the rest.
"""

from __future__ import annotations

import argparse

import torch
from common import timed, write_result

from mtssl.engine.trainer import Trainer
from mtssl.ops.distance import signed_distance
from mtssl.tasks.transforms import SegToSdf

RECIPES = ["supervised", "mean_teacher", "ua_mt", "dtc", "mcnet", "dbisl"]


def trainer_for(recipe: str, device: str, la: bool) -> Trainer:
    size, patch, filters = ([128, 128, 96], [112, 112, 80], 16) if la else ([48, 48, 40], [32, 32, 32], 8)
    config = {
        "recipe": {"name": recipe},
        "data": {"name": "phantom", "labeled": 4, "num_train": 8, "num_test": 1, "size": size, "patch": patch},
        "model": {"backbone": {"n_filters": filters}},
        "train": {"iterations": 1, "device": device, "progress": False},
    }
    return Trainer(config, "unused")


def dbisl_breakdown(trainer: Trainer, batch: dict, device: torch.device, repeats: int, total: float) -> list[dict]:
    """Network, exact targets, soft SDF (seg->sdf on the labeled half and on all samples) and the rest."""
    label, image = batch["label"].to(device), batch["image"].to(device)
    seg_to_sdf = SegToSdf(activation="sigmoid")

    def soft(n: int) -> None:
        logits = torch.randn(n, 1, *image.shape[2:], device=device, requires_grad=True)
        seg_to_sdf(logits).square().mean().backward()

    def network() -> None:
        out = trainer.model(image)
        sum(o.float().mean() for o in out.values()).backward()

    n_lab = int(batch["labeled"].sum())
    net = timed(network, device, repeats)
    targets = timed(lambda: signed_distance(label), device, repeats)
    soft_sdf = timed(lambda: soft(n_lab), device, repeats) + timed(lambda: soft(image.shape[0]), device, repeats)
    return [
        {"recipe": "dbisl: network", "ms": 1e3 * net},
        {"recipe": "dbisl: exact targets", "ms": 1e3 * targets},
        {"recipe": "dbisl: soft SDF", "ms": 1e3 * soft_sdf},
        {"recipe": "dbisl: rest", "ms": 1e3 * (total - net - targets - soft_sdf)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    la = device.type == "cuda"
    rows, base = [], None
    for recipe in RECIPES:
        trainer = trainer_for(recipe, args.device, la)
        batch = next(iter(trainer.loader))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(lambda trainer=trainer, batch=batch: trainer.step(batch), device, args.repeats)
        base = seconds if recipe == "supervised" else base
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rows.append({"recipe": recipe, "ms": 1e3 * seconds, "ratio_to_supervised": seconds / base, "peak_gib": peak})
        if recipe == "dbisl":
            rows += dbisl_breakdown(trainer, batch, device, args.repeats, seconds)
    write_result("train_step", device, rows)


if __name__ == "__main__":
    main()
