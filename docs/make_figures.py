"""Make the docs' figures from real runs: nothing here is drawn by hand.

    python docs/make_figures.py --run RUN --grid GRID [--case 0] [--out docs/figures]

- ``RUN`` is a run folder of a seg + SDF recipe (DBiSL or DTC), for example a cell of the CPU LA
  grid: ``runs/la_cpu/runs/dbisl/labels4/seed1338``. The script tests its weights on one test
  case with the run's own sliding-window settings, and draws one slice through the label's centre:
  the image with the label, the prediction, the exact SDF target, the predicted SDF, and the
  uncertainty, which is the two tasks' disagreement ``|sigmoid(seg) - sigmoid(-k sdf)|``.
  That is the quantity that down-weights DBiSL's pseudo-labels.
- ``GRID`` is a ``mtssl bench`` output folder. Its plots (Dice against labels, per-case Dice, loss
  curves) are copied as the harness wrote them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

HARNESS_PLOTS = ("dice_vs_labels.png", "per_case_dice.png", "loss_curves.png")


def predict_case(run: Path, case: int) -> dict[str, np.ndarray | str | float]:
    """The run's seg probability, SDF, and SDF-derived probability on test case ``case``, plus its label."""
    from mtssl import metrics
    from mtssl.config import build_dataclass
    from mtssl.engine.build import RunConfig, build_components
    from mtssl.engine.checkpoint import load_checkpoint, load_state_checked
    from mtssl.engine.evaluator import resolve_checkpoint
    from mtssl.engine.sliding_window import sliding_window
    from mtssl.engine.spec import InferenceSpec
    from mtssl.ops import signed_distance

    ckpt = resolve_checkpoint(run)
    state = load_checkpoint(ckpt)
    cfg = build_dataclass(RunConfig, state["config"])
    _, data, model = build_components(cfg)
    if not {"seg", "sdf"} <= set(model.tasks):
        raise SystemExit(f"{run} is a {cfg.recipe['name']} run; the figure needs seg and sdf heads (dbisl, dtc)")
    load_state_checked(model, state["model"], str(ckpt))
    model.eval()
    item = data.test[case]
    spec = InferenceSpec.from_checkpoint(state)
    seg_task, sdf_task = model.tasks["seg"], model.tasks["sdf"]

    @torch.no_grad()
    def predict(windows: torch.Tensor) -> torch.Tensor:
        out = model(windows)
        return torch.cat([seg_task.to_seg(out["seg"].float()), out["sdf"].float(), sdf_task.to_seg(out["sdf"])], 1)

    maps = sliding_window(predict, item["image"], spec.patch, spec.stride).numpy()
    label = item["label"].numpy().astype(bool)
    pred = maps[0] > spec.threshold
    dice = float(metrics.dice(torch.from_numpy(pred)[None], torch.from_numpy(label)[None])[0])
    return {
        "case": item["case"],
        "image": item["image"][0].numpy(),
        "label": label,
        "prediction": pred,
        "sdf_target": signed_distance(torch.from_numpy(label)[None])[0].numpy(),
        "sdf": maps[1],
        "uncertainty": np.abs(maps[0] - maps[2]),
        "dice": dice,
        "recipe": str(cfg.recipe["name"]),
        "iterations": int(state["iteration"]),
    }


def slice_figure(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = result["label"]
    z = int(np.argwhere(label).mean(0)[-1]) if label.any() else label.shape[-1] // 2
    cut = {k: v[..., z].T for k, v in result.items() if isinstance(v, np.ndarray)}
    panels = [
        ("image and label", cut["image"], "gray", None),
        ("prediction", cut["prediction"].astype(float), "gray", (0, 1)),
        ("SDF target", cut["sdf_target"], "RdBu_r", (-1, 1)),
        ("predicted SDF", cut["sdf"], "RdBu_r", (-1, 1)),
        ("uncertainty |p_seg - p_sdf|", cut["uncertainty"], "magma", (0, 1)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, image, cmap, limits) in zip(axes, panels):
        shown = ax.imshow(
            image,
            cmap=cmap,
            vmin=None if limits is None else limits[0],
            vmax=None if limits is None else limits[1],
            origin="lower",
        )
        ax.contour(cut["label"], levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        if limits is not None and cmap != "gray":
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(
        f"{result['recipe']} after {result['iterations']} iterations, test case {result['case']} "
        f"(slice z={z}; label contour in green; this case's Dice at threshold 0.5, no LCC: "
        f"{100 * result['dice']:.1f} %)",
        fontsize=10,
    )
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result['recipe']}_slice.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder of a seg + SDF recipe")
    parser.add_argument("--grid", help="a mtssl bench folder whose plots to copy")
    parser.add_argument("--case", type=int, default=0, help="which test case")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "figures"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    result = predict_case(Path(args.run), args.case)
    written = [slice_figure(result, out)]
    if args.grid:
        for name in HARNESS_PLOTS:
            source = Path(args.grid) / name
            if not source.is_file():
                raise SystemExit(f"{source} is missing: run `mtssl bench` on the grid first")
            shutil.copyfile(source, out / name)
            written.append(out / name)
    record = {"run": str(args.run), "grid": args.grid, "case": result["case"], "dice": result["dice"]}
    (out / "figures.json").write_text(json.dumps(record, indent=1))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
