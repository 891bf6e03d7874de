"""Milliseconds per training step of every recipe, as a ratio to the supervised step in the same run.

    python benchmarks/train_step.py                  # CPU: the CPU LA protocol's 2+2 x 64x64x32, 16 filters
    python benchmarks/train_step.py --filters 8      # the same with an 8-filter V-Net
    python benchmarks/train_step.py --device cuda    # the LA setting: 2+2 x 112x112x80, 16 filters, bf16

DBiSL's step is broken down into the network (forward + backward of its heads' supervised losses),
the exact targets, the soft SDF (seg->sdf forward + backward) and the rest.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import timed, write_result

from mtssl.engine.trainer import Trainer
from mtssl.ops.distance import signed_distance

RECIPES = ["supervised", "mean_teacher", "ua_mt", "dtc", "mcnet", "dbisl"]


# (volume size, patch, V-Net filters) of each setting: the literature's LA step, the CPU LA
# protocol's (volumes downsampled 2x, 64x64x32 crops), and a tiny one for smoke runs.
SETTINGS = {
    "la": ([128, 128, 96], [112, 112, 80], 16),
    "cpu": ([80, 80, 40], [64, 64, 32], 16),
    "tiny": ([24, 24, 24], [16, 16, 16], 4),
}


def trainer_for(recipe: str, device: str, setting: str, filters: int | None = None) -> Trainer:
    size, patch, default_filters = SETTINGS[setting]
    filters = filters or default_filters
    config = {
        "recipe": {"name": recipe},
        "data": {"name": "phantom", "labeled": 4, "num_train": 8, "num_test": 1, "size": size, "patch": patch},
        "model": {"backbone": {"n_filters": filters}},
        "train": {"iterations": 1, "device": device, "progress": False},
    }
    return Trainer.from_config(config, "unused")


def dbisl_breakdown(trainer: Trainer, batch: dict, device: torch.device, repeats: int, total: float) -> list[dict]:
    """Network, exact targets, soft SDF (seg->sdf of all samples, shared by its terms) and the rest."""
    label, image = batch["label"].to(device), batch["image"].to(device)
    sdf_task = trainer.model.tasks["sdf"]  # DBiSL's: h follows the patch (4 at 112x112x80)

    def soft(n: int) -> None:
        logits = torch.randn(n, 1, *image.shape[2:], device=device, requires_grad=True)
        sdf_task.from_seg(logits, "sigmoid").square().mean().backward()

    def network() -> None:
        out = trainer.model(image)
        sum(o.float().mean() for o in out.values()).backward()

    net = timed(network, device, repeats)
    targets = timed(lambda: signed_distance(label), device, repeats)
    soft_sdf = timed(lambda: soft(image.shape[0]), device, repeats)
    return [
        {"recipe": "dbisl: network", "ms": 1e3 * net},
        {"recipe": "dbisl: exact targets", "ms": 1e3 * targets},
        {"recipe": "dbisl: soft SDF", "ms": 1e3 * soft_sdf},
        {"recipe": "dbisl: rest", "ms": 1e3 * (total - net - targets - soft_sdf)},
    ]


def step_rows(device: torch.device, setting: str, filters: int | None, repeats: int) -> list[dict]:
    """Every recipe's step, timed round-robin (one step of each recipe per round, medians over rounds)
    so that the shared machine's drift falls on all recipes alike; ratios to the supervised step."""
    trainers = {r: trainer_for(r, device.type, setting, filters) for r in RECIPES}
    batches = {r: next(iter(t.loader)) for r, t in trainers.items()}
    peaks: dict[str, float | None] = {}
    for recipe, trainer in trainers.items():  # warm-up, and the peak memory of one step alone
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.step(batches[recipe])
        peaks[recipe] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    times: dict[str, list[float]] = {r: [] for r in RECIPES}
    for _ in range(repeats):
        for recipe, trainer in trainers.items():
            times[recipe].append(timed(lambda t=trainer, b=batches[recipe]: t.step(b), device, 1, warmup=False))
    median = {r: statistics.median(v) for r, v in times.items()}
    rows = [
        {
            "recipe": r,
            "ms": 1e3 * median[r],
            "ratio_to_supervised": median[r] / median["supervised"],
            "peak_gib": peaks[r],
        }
        for r in RECIPES
    ]
    return rows + dbisl_breakdown(trainers["dbisl"], batches["dbisl"], device, repeats, median["dbisl"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--filters", type=int, help="V-Net base filters (default: the setting's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    setting = "la" if device.type == "cuda" else "cpu"
    rows = step_rows(device, setting, args.filters, args.repeats)
    _, patch, filters = SETTINGS[setting]
    suffix = "" if args.filters in (None, filters) else f"-f{args.filters}"
    extra = {"setting": setting, "patch": patch, "filters": args.filters or filters, "rounds": args.repeats}
    write_result(f"train_step{suffix}", device, rows, extra)


if __name__ == "__main__":
    main()
