"""Parity with the reference code: SSL4MIS's own 2D training scripts at the CPU ACDC protocol, scored by
mtssl's evaluator, beside mtssl's runs of the same recipe, labels and seed (docs/acdc.md).

    python benchmarks/ssl4mis_parity.py --ssl4mis /path/to/SSL4MIS --data /path/to/ACDC \
        --recipe mean_teacher --labeled 3 --seed 1337 --work /tmp/ssl4mis_parity \
        --dest benchmarks/results/acdc_cpu/ssl4mis

SSL4MIS (HiLab-git/SSL4MIS, a checkout or a snapshot) is never part of this repository: its ``code/`` is
copied into ``--work`` and changed only as :data:`CHANGES` lists, to run on the CPU at the CPU protocol's
iterations, batch, patch and ramp (examples/configs/acdc_cpu_supervised.yaml), with the ramp and the
mean teacher's ramp set to the CPU grid's (40 steps of 28 iterations) and its 1000-iteration start
scaled to the run's length as SSL4MIS's 30000 iterations have it.
Every edit must find its text, so a changed upstream file stops the script instead of running something
else. Only the network's import is narrowed (``net_factory`` imports every network SSL4MIS has, whose
packages are not installed here): its ``unet`` branch is what the scripts build.

The reference trains and selects on the validation volumes with its own code; its best checkpoint is
then tested on the 40 test volumes by mtssl's evaluator (slice by slice, zoomed to the patch and back,
Dice, HD95 and ASD per class in voxels), as mtssl's runs are. One JSON per run goes to ``--dest``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

SCRIPTS = {"supervised": "train_fully_supervised_2D.py", "mean_teacher": "train_mean_teacher_2D.py"}
# SSL4MIS's net_factory("unet", in_chns, class_num) without the imports of its other networks
UNET_ONLY = (
    "from networks.unet import UNet\n\n\n"
    "def net_factory(net_type='unet', in_chns=1, class_num=4):  # parity: net_factory's unet branch\n"
    "    assert net_type == 'unet', net_type\n"
    "    return UNet(in_chns=in_chns, class_num=class_num)\n"
)
NO_WRITER = (
    "class SummaryWriter:  # parity: tensorboardX is not installed; nothing read from its logs\n"
    "    def __init__(self, *args, **kwargs): pass\n"
    "    def __getattr__(self, name): return lambda *args, **kwargs: None\n"
)


def changes(
    recipe: str, iterations: int, patch: int, ramp_divisor: int = 28, foreground_dice: bool = False
) -> dict[str, list[tuple[str, str]]]:
    """Every edit to SSL4MIS's files, by file: (text, replacement); each text must occur.

    The mean teacher's ramp steps every ``ramp_divisor`` iterations instead of 150 (with
    ``--consistency_rampup 40``, mtssl's 40 steps: the CPU grid's ramp, full at 1120 of 1400), and its
    consistency starts at 1000 / 30000 of the run instead of iteration 1000.
    ``foreground_dice`` (a diagnostic, not parity) drops the background channel from SSL4MIS's Dice loss
    and averages over the foreground classes, as mtssl's Dice does: the one loss difference known.
    """
    train = [
        ("from tensorboardX import SummaryWriter", NO_WRITER),
        ("from networks.net_factory import net_factory", UNET_ONLY),
        (".cuda()", ""),
        ("default=[256, 256]", f"default=[{patch}, {patch}]"),
        ("shutil.ignore_patterns(['.git', '__pycache__'])", "shutil.ignore_patterns('.git', '__pycache__')"),
    ]
    if recipe == "supervised":
        train.append(("num_workers=16", "num_workers=0"))
    else:
        train += [
            ("num_workers=4", "num_workers=0"),
            (
                "get_current_consistency_weight(iter_num//150)",
                f"get_current_consistency_weight(iter_num//{ramp_divisor})",
            ),
            ("if iter_num < 1000:", f"if iter_num < {1000 * iterations // 30000}:"),
        ]
    edits = {
        SCRIPTS[recipe]: train,
        "val_2D.py": [(".cuda()", ""), ("patch_size=[256, 256]", f"patch_size=[{patch}, {patch}]")],
        "dataloaders/dataset.py": [("import cv2\n", "")],
    }
    if foreground_dice:
        edits["utils/losses.py"] = [
            ("            weight = [1] * self.n_classes\n", "            weight = [0] + [1] * (self.n_classes - 1)\n"),
            ("        return loss / self.n_classes\n", "        return loss / (self.n_classes - 1)\n"),
        ]
    return edits


def apply_changes(code: Path, edits: dict[str, list[tuple[str, str]]]) -> None:
    """Apply ``edits`` to the files under ``code``; a text that is not there is an error."""
    for name, pairs in edits.items():
        path = code / name
        text = path.read_text()
        for old, new in pairs:
            if old not in text:
                raise SystemExit(
                    f"{path}: {old!r} not found; this SSL4MIS differs from the one the parity was written for"
                )
            text = text.replace(old, new)
        path.write_text(text)


def same_network(code: Path) -> float:
    """SSL4MIS's ``UNet(1, 4)`` and mtssl's ``unet`` with its 3x3 head, given the same weights (copied in
    order, each shape checked): the largest difference of their eval-mode logits on a random batch."""
    from mtssl import build_model

    sys.path.insert(0, str(code))
    from networks.unet import UNet  # SSL4MIS's network, from the work copy

    torch.manual_seed(0)
    theirs = UNet(in_chns=1, class_num=4).eval()
    ours = build_model(
        {"backbone": {"name": "unet"}, "tasks": {"seg": {"num_classes": 3, "softmax": True, "head_kernel": 3}}}
    ).eval()
    source, target = theirs.state_dict(), ours.state_dict()
    if len(source) != len(target):
        raise SystemExit(f"SSL4MIS's UNet has {len(source)} tensors, mtssl's unet {len(target)}")
    for (name, value), (key, mine) in zip(source.items(), target.items()):
        if value.shape != mine.shape:
            raise SystemExit(f"{name} {tuple(value.shape)} does not fit mtssl's {key} {tuple(mine.shape)}")
    ours.load_state_dict(dict(zip(target, source.values())))
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        return float((theirs(x) - ours(x)["seg"]).abs().max())


def score(code: Path, checkpoint: Path, data_root: Path, patch: int) -> dict:
    """The reference's checkpoint tested by mtssl's evaluator on the 40 test volumes."""
    from mtssl.data.acdc import acdc
    from mtssl.engine.protocol import EvalConfig, evaluate_cases, summarize

    sys.path.insert(0, str(code))
    from networks.unet import UNet  # SSL4MIS's network, from the work copy

    net = UNet(in_chns=1, class_num=4)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    net.eval()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(x), 1)[:, 1:]

    data = acdc(str(data_root), labeled=3, patch=(patch, patch), val=False)
    rows = evaluate_cases(
        predict,
        data.test,
        EvalConfig(lcc=False),
        (patch, patch),
        3,
        True,
        torch.device("cpu"),
        slice_size=(patch, patch),
    )
    return summarize(rows, "voxels", "best validation Dice (SSL4MIS's own selection)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssl4mis", type=Path, required=True, help="an SSL4MIS checkout (holding code/)")
    ap.add_argument("--commit", help="the SSL4MIS commit, recorded (default: the checkout's git HEAD)")
    ap.add_argument("--data", type=Path, required=True, help="ACDC in SSL4MIS's layout (restore.py's folder)")
    ap.add_argument("--recipe", choices=sorted(SCRIPTS), required=True)
    ap.add_argument("--labeled", type=int, default=3, help="labeled patients")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--iterations", type=int, default=1400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--labeled-bs", type=int, default=4, help="labeled slices a batch (the mean teacher)")
    ap.add_argument("--patch", type=int, default=112)
    ap.add_argument("--ramp-divisor", type=int, default=28, help="iterations per ramp step (of 40), as the grid's")
    ap.add_argument(
        "--work", type=Path, required=True, help="a folder outside the repository for the copy and its runs"
    )
    ap.add_argument("--dest", type=Path, required=True, help="where the scored run's JSON goes")
    ap.add_argument(
        "--foreground-dice",
        action="store_true",
        help="diagnostic: SSL4MIS's Dice loss over the foreground classes only, as mtssl's (ssl4mis_fgdice_*.json)",
    )
    args = ap.parse_args(argv)

    name = f"ssl4mis{'_fgdice' if args.foreground_dice else ''}_{args.recipe}_{args.labeled}_s{args.seed}"
    work = args.work / name
    marker = work / ".ssl4mis_parity"
    if work.exists() and not marker.is_file():
        raise SystemExit(f"{work} exists and was not made by this script; give another --work")
    if work.exists():
        shutil.rmtree(work)  # this script's own copy and run from an earlier try
    work.mkdir(parents=True)
    marker.write_text("made by benchmarks/ssl4mis_parity.py\n")
    shutil.copytree(args.ssl4mis / "code", work / "code")
    edits = changes(args.recipe, args.iterations, args.patch, args.ramp_divisor, args.foreground_dice)
    # SSL4MIS picks its patients_to_slices table by "ACDC" in --root_path (else its Prostate one)
    data = work / "ACDC"
    data.symlink_to(args.data.resolve(), target_is_directory=True)
    apply_changes(work / "code", edits)
    command = [
        sys.executable, SCRIPTS[args.recipe], "--root_path", str(data), "--exp", f"ACDC/{name}",
        "--max_iterations", str(args.iterations), "--batch_size", str(args.batch), "--labeled_num", str(args.labeled),
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.recipe == "mean_teacher":
        command += ["--labeled_bs", str(args.labeled_bs), "--consistency_rampup", "40"]
    start = time.perf_counter()
    subprocess.run(command, cwd=work / "code", check=True)
    seconds = time.perf_counter() - start
    checkpoint = work / "model" / f"ACDC/{name}_{args.labeled}_labeled" / "unet" / "unet_best_model.pth"
    summary = score(work / "code", checkpoint, args.data, args.patch)
    difference = same_network(work / "code")
    commit = subprocess.run(["git", "-C", str(args.ssl4mis), "rev-parse", "HEAD"], capture_output=True, text=True)
    record = {
        "implementation": "SSL4MIS",
        "recipe": args.recipe,
        "labels": args.labeled,
        "seed": args.seed,
        "iterations": args.iterations,
        "batch": args.batch,
        "patch": args.patch,
        "seconds": seconds,
        "ssl4mis_commit": args.commit or commit.stdout.strip() or None,
        "changes": {f: [[old, new] for old, new in pairs] for f, pairs in edits.items()},
        "command": command,
        "same_weights_max_logit_difference": difference,
        **summary,
    }
    args.dest.mkdir(parents=True, exist_ok=True)
    (args.dest / f"{name}.json").write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(f"{name}: test Dice {100 * summary['mean']['dice']:.2f} in {seconds:.0f} s -> {args.dest / (name + '.json')}")
    return record


if __name__ == "__main__":
    main()
