import json
import math

import pytest
import torch
import yaml

from mtssl.cli import main
from mtssl.engine.evaluator import evaluate_run
from mtssl.engine.run import train_run
from mtssl.engine.trainer import Trainer
from mtssl.recipes.base import Recipe, Term
from mtssl.terms.context import StepContext


def tiny_config(classes=1, iterations=30, **train):
    return {
        "recipe": {"name": "supervised", "softmax": classes > 1},
        "data": {
            "name": "phantom",
            "classes": classes,
            "labeled": 2,
            "num_train": 4,
            "num_test": 2,
            "size": [32, 32, 32],
            "patch": [16, 16, 16],
        },
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {
            "iterations": iterations,
            "log_every": 5,
            "nan_check_every": 5,
            "checkpoint_every": 10,
            "optimizer": {"name": "adamw", "lr": 0.01},
            "progress": False,
            **train,
        },
        "eval": {"stride": [16, 16, 16]},
    }


@pytest.mark.parametrize("classes", [1, 3], ids=["1-class", "3-class"])
def test_phantom_training_writes_everything(tmp_path, classes):
    summary = train_run(tiny_config(classes), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [5, 10, 15, 20, 25, 30]
    for r in records:
        assert {"loss/seg_dice", "loss/seg_ce", "loss/total", "lr", "it_per_s", "weight/seg"} <= set(r)
    first, last = records[0]["loss/total"], records[-1]["loss/total"]
    assert last < first, (first, last)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(summary))
    assert set(metrics["mean"]) == {"dice", "jaccard", "hd95", "asd"}
    assert metrics["cases"] == 2 and len(metrics["per_case"]) == 2 * classes
    assert set(metrics["per_class"]) == {str(c) for c in range(1, classes + 1)}
    assert 0 <= metrics["mean"]["dice"] <= 1 and metrics["units"]["hd95"] == "voxels"
    assert metrics["selection"] == "last iteration"
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["run"]["seed"] == 1337 and config["run"]["labeled"] == ["phantom000", "phantom001"]
    assert config["run"]["torch"] == torch.__version__ and config["run"]["mtssl"] and config["run"]["python"]
    assert config["run"]["git_revision"] is None or len(config["run"]["git_revision"]) == 40
    assert config["train"]["iterations"] == 30 and config["train"]["optimizer"]["name"] == "adamw"  # resolved
    assert config["eval"]["batch_size"] == 8  # defaults filled in
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and (tmp_path / "split.json").is_file()
    assert (tmp_path / "metrics.csv").read_text().startswith("case,class,dice,jaccard,hd95,asd")


def test_targets_are_float32_under_bf16_autocast():
    trainer = Trainer.from_config(tiny_config(), "unused")
    batch = next(iter(trainer.loader))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = trainer.model(batch["image"])
        assert outputs["seg"].dtype == torch.bfloat16
        ctx = StepContext(
            image=batch["image"],
            label=batch["label"],
            outputs=outputs,
            tasks=trainer.model.tasks,
            iteration=0,
            n_labeled=2,
        )
        assert ctx.target("seg").dtype == torch.float32
        sdf_target = trainer.model.tasks["seg"].target(batch["label"])
    assert sdf_target.dtype == torch.float32


def test_nan_guard_names_the_term_and_iteration(tmp_path):
    trainer = Trainer.from_config(tiny_config(nan_check_every=3, log_every=100), tmp_path)

    def poisoned(ctx):
        return {"bad_term": ctx.outputs["seg"].mean() * (math.nan if ctx.iteration >= 4 else 1.0)}

    trainer.recipe = Recipe(tasks=trainer.recipe.tasks, terms=(Term.of(poisoned),))
    with pytest.raises(FloatingPointError, match=r"loss term 'bad_term' is nan at iteration 6"):
        trainer.fit()


def test_selection_on_validation_is_named(tmp_path):
    cfg = tiny_config(iterations=10)
    cfg["data"].update(labeled=4, val=0.5, num_train=6)
    cfg["eval"].update(select="val", select_every=5)
    summary = train_run(cfg, tmp_path)
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert summary["selection"] == "best validation Dice"
    cfg["eval"].update(select="test")
    assert train_run(cfg, tmp_path / "t")["selection"].startswith("best TEST Dice (selected on the test set")


def test_cli_train_then_evaluate(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=4)))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "train.log_every=2"]) == 0
    assert "Dice %" in capsys.readouterr().out
    trained = (tmp_path / "run" / "metrics.json").read_bytes()
    first = json.loads(trained)
    assert main(["evaluate", str(tmp_path / "run"), "eval.lcc=false"]) == 0
    assert "evaluations/eval.lcc=false" in capsys.readouterr().out
    # The training-time metrics stay as they were; the evaluation is written beside them, with its record.
    assert (tmp_path / "run" / "metrics.json").read_bytes() == trained
    folder = tmp_path / "run" / "evaluations" / "eval.lcc=false"
    again = json.loads((folder / "metrics.json").read_text())
    assert again["checkpoint"].endswith("last.pt") and again["cases"] == first["cases"]
    record = json.loads((folder / "evaluation.json").read_text())
    assert record["overrides"] == ["eval.lcc=false"] and record["checkpoint"].endswith("last.pt")
    summary = evaluate_run(tmp_path / "run")
    assert summary["mean"]["dice"] == pytest.approx(first["mean"]["dice"])
    assert (tmp_path / "run" / "evaluations" / "default" / "metrics.json").is_file()


def test_cli_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    assert main(["train", str(path), "recipe.name=supervisd"]) == 2
    assert "Did you mean 'supervised'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_deterministic_runs_give_bit_identical_metrics(tmp_path):
    cfg = tiny_config(iterations=10, deterministic=True)
    cfg["model"]["backbone"]["has_dropout"] = True  # the RNG is in play
    train_run(cfg, tmp_path / "a")
    train_run(cfg, tmp_path / "b")
    a, b = ((tmp_path / r / "metrics.json").read_bytes() for r in "ab")
    assert a == b
    other = tiny_config(iterations=10, deterministic=True, seed=1)
    other["model"]["backbone"]["has_dropout"] = True
    train_run(other, tmp_path / "c")
    assert (tmp_path / "c" / "metrics.json").read_bytes() != a  # the seed matters


def test_metrics_json_is_strict_json(tmp_path):
    from mtssl.engine.evaluator import write_metrics

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    row = {"case": "a", "class": 1, "dice": 0.0, "hd95": float("nan"), "empty_prediction": True}
    write_metrics(tmp_path, {"mean": {"dice": 0.0, "hd95": float("nan")}, "per_case": [row]})
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["mean"]["hd95"] is None and metrics["per_case"][0]["hd95"] is None
    assert "nan" in (tmp_path / "metrics.csv").read_text()  # CSV readers take NaN


def test_progress_keeps_count_speed_and_eta_at_80_columns():
    import io

    from rich.console import Console

    from mtssl.engine.progress import TrainProgress

    record = {"it_per_s": 1.25, "loss/total": 0.5, **{f"loss/term_with_a_long_name_{i}": 0.1 * i for i in range(12)}}
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    progress = TrainProgress(500, 0, enabled=True, console=console)
    progress.update(40, record)
    console.print(progress.progress.make_tasks_table(progress.progress.tasks))
    line = next(line for line in out.getvalue().splitlines() if "train" in line)
    assert len(line) <= 80 and "40/500" in line and "1.25 it/s" in line and "0:06:08" in line
    assert "total=0.500" in line  # the total first; the terms take the room left

    plain = io.StringIO()  # not a terminal (a log file, CI): a plain line per record
    progress = TrainProgress(500, 0, enabled=True, console=Console(file=plain, width=80))
    progress.update(40, record)
    progress.update(60, record)
    lines = plain.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["40/500", "60/500"] and "eta 0:06:08" in lines[0]

    terminal = io.StringIO()  # train.progress: false on a terminal: no bar, but still a plain line per record
    progress = TrainProgress(500, 0, enabled=False, console=Console(file=terminal, force_terminal=True, width=200))
    with progress:
        progress.update(40, record)
    assert terminal.getvalue().splitlines()[0].startswith("train 40/500 1.25 it/s eta 0:06:08 total=0.500")


def test_testing_shows_each_case():
    import io

    from rich.console import Console

    from mtssl.engine.progress import case_progress

    out = io.StringIO()
    items = [{"case": c} for c in ("a", "b", "c")]
    assert list(case_progress(iter(items), 3, "test", True, Console(file=out, width=80))) == items
    assert out.getvalue().splitlines() == ["test case 1/3: a", "test case 2/3: b", "test case 3/3: c"]


def test_tensorboard_events_read_back_with_named_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(iterations=6, log_every=2, tensorboard=True)
    cfg["recipe"] = {"name": "dtc"}
    summary = train_run(cfg, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    terms = {"seg", "sdf", "consistency_sdf_seg"}
    assert {f"weight/{t}" for t in terms} <= tags  # each term's weight under its name
    assert {"loss/seg_dice", "loss/sdf_mse", "loss/consistency_sdf_seg", "loss/total", "lr", "it_per_s"} <= tags
    assert [e.step for e in events.Scalars("loss/total")] == [2, 4, 6]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([r["lr"] for r in records])
    assert events.Scalars("test/dice")[0].value == pytest.approx(summary["mean"]["dice"])
