"""The ACDC tables: a volume's Dice is its classes' mean, averaged over the seeds both recipes have, and
the test runs over volumes; the SSL4MIS parity script edits only what it names."""

import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

from benchmarks.acdc_cpu_tables import class_table, comparison_table, parity_comparison, parity_table, per_volume
from benchmarks.ssl4mis_parity import apply_changes, changes


def write_cell(grid, recipe, labels, seed, dice):
    cell = grid / "runs" / recipe / f"labels{labels}" / f"seed{seed}"
    cell.mkdir(parents=True)
    rows = [
        {"case": v, "class": c + 1, "dice": d, "empty_prediction": d == 0}
        for v, per_class in dice.items()
        for c, d in enumerate(per_class)
    ]
    per_class = {str(c): {"dice": float(np.mean([r["dice"] for r in rows if r["class"] == c]))} for c in (1, 2, 3)}
    mean = {"dice": float(np.mean([np.mean(per) for per in dice.values()]))}  # over the volumes, as the evaluator's
    (cell / "metrics.json").write_text(json.dumps({"per_case": rows, "per_class": per_class, "mean": mean}))


def test_volumes_average_their_classes_then_the_common_seeds(tmp_path):
    rng = np.random.default_rng(1)
    dice = {
        (r, s): {f"v{i}": rng.uniform(0.3, 0.95, 3).tolist() for i in range(10)}
        for r in ("dbisl", "dtc")
        for s in (1, 2)
    }
    for (recipe, seed), values in dice.items():
        write_cell(tmp_path, recipe, 3, seed, values)
    write_cell(tmp_path, "dbisl", 3, 3, dice["dbisl", 1])  # no dtc partner: left out of the test
    a = per_volume(tmp_path, "dbisl", 3)
    assert sorted(a) == [1, 2, 3] and a[2]["v4"] == pytest.approx(np.mean(dice["dbisl", 2]["v4"]))
    cases = [f"v{i}" for i in range(10)]
    mean = {r: [np.mean([np.mean(dice[r, s][c]) for s in (1, 2)]) for c in cases] for r in ("dbisl", "dtc")}
    line = comparison_table([("dbisl", tmp_path, "dtc", tmp_path, 3)])[-1]
    cells = [x.strip() for x in line.strip("|").split("|")]
    assert cells[3] == "2 ⚠"  # seeds both have; fewer than 3
    assert float(cells[8]) == pytest.approx(wilcoxon(mean["dbisl"], mean["dtc"]).pvalue, rel=1e-2)  # 10 pairs, not 20
    assert float(cells[6]) == pytest.approx(100 * (np.mean(mean["dbisl"]) - np.mean(mean["dtc"])), abs=0.01)


def test_class_table_averages_the_seeds_and_counts_empty_classes(tmp_path):
    write_cell(tmp_path, "dbisl", 3, 1, {"v1": [0.0, 0.6, 0.8], "v2": [0.2, 0.7, 0.9]})
    write_cell(tmp_path, "dbisl", 3, 2, {"v1": [0.0, 0.4, 0.6], "v2": [0.0, 0.5, 0.7]})
    line = class_table([tmp_path])[-1]
    assert line == "| dbisl | 3 | 2 | 5.00 | 55.00 | 75.00 | 3 / 0 / 0 |"


def test_parity_pairs_mtssl_against_ssl4mis_over_the_volumes_of_common_seeds(tmp_path):
    """mtssl's runs come from several grids (the main grid and the parity's extra seeds); only the seeds
    both codes ran are paired, and the per-seed table shows every seed, "—" where a code has none."""
    rng = np.random.default_rng(2)
    mine = {s: {f"v{i}": rng.uniform(0.3, 0.9, 3).tolist() for i in range(8)} for s in (1, 2, 3)}
    theirs = {s: {f"v{i}": rng.uniform(0.2, 0.8, 3).tolist() for i in range(8)} for s in (1, 3, 4)}
    main, extra = tmp_path / "main", tmp_path / "extra"
    for seed, values in mine.items():
        write_cell(extra if seed == 3 else main, "supervised", 3, seed, values)
    reference = tmp_path / "ssl4mis"
    reference.mkdir()
    for seed, values in theirs.items():
        rows = [{"case": v, "class": c + 1, "dice": d} for v, per in values.items() for c, d in enumerate(per)]
        record = {
            "seed": seed,
            "per_case": rows,
            "mean": {"dice": float(np.mean([np.mean(x) for x in values.values()]))},
        }
        (reference / f"ssl4mis_supervised_3_s{seed}.json").write_text(json.dumps({**record, "seconds": 60.0}))
    lines = parity_comparison(reference, [main, extra])
    assert len(lines) == 3  # the header, its rule, and supervised only: no mean-teacher runs on either side
    cells = [x.strip() for x in lines[-1].strip("|").split("|")]
    assert cells[:4] == ["supervised (mtssl)", "SSL4MIS", "3", "2 ⚠"]  # seeds 1 and 3; 2 and 4 have no partner
    volumes = [f"v{i}" for i in range(8)]
    a = [np.mean([np.mean(mine[s][v]) for s in (1, 3)]) for v in volumes]
    b = [np.mean([np.mean(theirs[s][v]) for s in (1, 3)]) for v in volumes]
    assert float(cells[8]) == pytest.approx(wilcoxon(a, b).pvalue, rel=1e-2)
    assert float(cells[6]) == pytest.approx(100 * (np.mean(a) - np.mean(b)), abs=0.01)

    def run_mean(runs, seed):  # a run's Dice: the mean over its volumes of their class means
        return np.mean([np.mean(per) for per in runs[seed].values()])

    assert cells[10] == ", ".join(f"{100 * (run_mean(mine, s) - run_mean(theirs, s)):+.2f}" for s in (1, 3))

    table = parity_table(reference, [main, extra])
    assert table[0] == "| recipe | code | Dice % at seeds 1, 2, 3, 4 | mean ± std over seeds | run time (s) |"
    ssl4mis_row, mtssl_row = ([x.strip() for x in line.strip("|").split("|")] for line in table[2:])
    assert ssl4mis_row[:2] == ["supervised", "SSL4MIS"] and ssl4mis_row[2].split(", ")[1] == "—"  # none at seed 2
    ours = [100 * run_mean(mine, s) for s in (1, 2, 3)]
    assert mtssl_row[:3] == ["supervised", "mtssl", ", ".join([*(f"{d:.2f}" for d in ours), "—"])]  # none at 4
    assert mtssl_row[3] == f"{np.mean(ours):.2f} ± {np.std(ours, ddof=1):.2f}"

    # the --foreground-dice diagnostic's runs get rows of their own, under their own name, never the parity's
    diagnosed = {**json.loads((reference / "ssl4mis_supervised_3_s4.json").read_text()), "seed": 1}  # seed 4's Dice
    (reference / "ssl4mis_fgdice_supervised_3_s1.json").write_text(json.dumps(diagnosed))
    lines = parity_comparison(reference, [main, extra])
    assert [x.strip() for x in lines[2].strip("|").split("|")][:4] == cells[:4]  # the parity row is unchanged
    diagnostic = [x.strip() for x in lines[3].strip("|").split("|")]
    assert diagnostic[:4] == ["supervised (mtssl)", "SSL4MIS, fg Dice (diagnostic)", "3", "1 ⚠"]
    assert diagnostic[10] == f"{100 * (run_mean(mine, 1) - run_mean(theirs, 4)):+.2f}"  # paired at its own seed, 1
    rows = parity_table(reference, [main, extra])
    assert [r.split("|")[2].strip() for r in rows[2:]] == ["SSL4MIS", "SSL4MIS, fg Dice (diagnostic)", "mtssl"]


def test_parity_edits_apply_and_a_missing_text_stops(tmp_path):
    code = tmp_path / "code"
    (code / "dataloaders").mkdir(parents=True)
    (code / "val_2D.py").write_text("x = net(input.cuda())\ndef f(patch_size=[256, 256]): pass\n")
    (code / "dataloaders" / "dataset.py").write_text("import os\nimport cv2\n")
    (code / "train_fully_supervised_2D.py").write_text(
        "from tensorboardX import SummaryWriter\nfrom networks.net_factory import net_factory\n"
        "y = x.cuda()\nparser.add_argument('--patch_size', type=list, default=[256, 256])\n"
        "shutil.copytree('.', p, shutil.ignore_patterns(['.git', '__pycache__']))\nDataLoader(num_workers=16)\n"
    )
    apply_changes(code, changes("supervised", 1200, 128))
    train = (code / "train_fully_supervised_2D.py").read_text()
    assert ".cuda()" not in train and "default=[128, 128]" in train and "num_workers=0" in train
    assert "import cv2" not in (code / "dataloaders" / "dataset.py").read_text()
    assert "patch_size=[128, 128]" in (code / "val_2D.py").read_text()
    # the mean teacher's ramp is the grid's (40 steps of 24), its start scaled with the run: 30000 -> 1200
    edits = dict(changes("mean_teacher", 1200, 128, ramp_divisor=24))["train_mean_teacher_2D.py"]
    assert ("get_current_consistency_weight(iter_num//150)", "get_current_consistency_weight(iter_num//24)") in edits
    assert ("if iter_num < 1000:", "if iter_num < 40:") in edits
    with pytest.raises(SystemExit, match="not found"):
        apply_changes(code, changes("supervised", 1200, 128))  # the texts are gone now


def test_the_docs_show_the_recorded_tables(capsys):
    """Every table row acdc_cpu_tables.py prints from the recorded cells stands, verbatim, on the ACDC page:
    a cell recorded without the page updated fails here."""
    from pathlib import Path

    from benchmarks import acdc_cpu_tables

    acdc_cpu_tables.main([])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    page = (Path(__file__).resolve().parents[2] / "docs" / "acdc.md").read_text()
    missing = [row for row in rows if row not in page]
    assert len(rows) > 10 and not missing, missing[:3]


def test_the_foreground_dice_diagnostic_drops_the_background_from_ssl4mis_dice(tmp_path):
    """The diagnostic's edit of SSL4MIS's DiceLoss, run: its loss equals the mean of the foreground classes'
    Dice losses alone, where SSL4MIS's own averages all four channels."""
    import torch

    source = (
        "import torch\nfrom torch import nn\n\nclass DiceLoss(nn.Module):\n"
        "    def __init__(self, n_classes):\n        super().__init__()\n        self.n_classes = n_classes\n\n"
        "    def forward(self, inputs, target, weight=None):\n"
        "        if weight is None:\n            weight = [1] * self.n_classes\n"
        "        loss = 0.0\n        for i in range(0, self.n_classes):\n"
        "            p, t = inputs[:, i], (target[:, 0] == i).float()\n"
        "            loss += (1 - 2 * (p * t).sum() / ((p * p).sum() + (t * t).sum())) * weight[i]\n"
        "        return loss / self.n_classes\n"
    )
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "losses.py").write_text(source)
    edits = changes("supervised", 1400, 112, foreground_dice=True)
    apply_changes(tmp_path, {"utils/losses.py": edits["utils/losses.py"]})
    assert "utils/losses.py" not in changes("supervised", 1400, 112)  # parity itself leaves the loss alone
    scope: dict = {}
    exec((tmp_path / "utils" / "losses.py").read_text(), scope)
    torch.manual_seed(0)
    probs, target = torch.softmax(torch.randn(2, 4, 8, 8), 1), torch.randint(0, 4, (2, 1, 8, 8))
    per_class = [
        1 - 2 * (probs[:, i] * (target[:, 0] == i)).sum() / ((probs[:, i] ** 2).sum() + (target[:, 0] == i).sum())
        for i in range(4)
    ]
    assert float(scope["DiceLoss"](4)(probs, target)) == pytest.approx(float(sum(per_class[1:]) / 3), rel=1e-5)
