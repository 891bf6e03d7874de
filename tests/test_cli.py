import subprocess
import sys

import pytest

from mtssl.cli import main


def test_list_all(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("backbone", "task", "transform", "strategy", "recipe", "dataset"):
        assert kind in out
    assert "sdf->seg" in out and "k=1500.0" in out


def test_list_one_kind(capsys):
    assert main(["list", "transform"]) == 0
    out = capsys.readouterr().out
    assert "seg->sdf" in out and "backbone" not in out


def test_list_unknown_kind(capsys):
    assert main(["list", "backbnoe"]) == 2
    assert "did you mean 'backbone'" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "mtssl", "list", "transform"], capture_output=True, text=True)
    assert result.returncode == 0 and "dist->seg" in result.stdout


def test_list_backbones_and_tasks(capsys):
    assert main(["list", "backbone"]) == 0
    out = capsys.readouterr().out
    for name in ("vnet", "mcnet", "monai_unet", "monai_segresnet", "smp"):
        assert name in out
    assert main(["list", "task"]) == 0
    out = capsys.readouterr().out
    for name in ("seg", "sdf", "dist", "edge"):
        assert f"│ {name} " in out


def test_list_datasets(capsys):
    assert main(["list", "dataset"]) == 0
    out = capsys.readouterr().out
    for name in ("la", "msd", "images2d", "phantom"):
        assert f"│ {name} " in out


def test_train_dry_run_checks_without_training(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "la_dbisl_16.yaml"
    monkeypatch.setenv("WORLD_SIZE", "8")  # as under torchrun: the plan counts the ranks
    out = tmp_path / "run"
    args = ["train", str(config), "--dry-run", "--out", str(out), "train.device=cuda", f"data.root={tmp_path}/LA"]
    assert main(args) == 2  # the data check reads every case: here there is no LA folder
    assert f"LA data not found: {tmp_path}/LA is not a folder" in capsys.readouterr().err
    assert main([*args, "--no-data-check"]) == 0
    printed = capsys.readouterr().out
    assert "recipe=dbisl" in printed and "heads=['seg', 'sdf']" in printed and "ranks=8" in printed
    assert "cases_checked=None" in printed
    assert "device=cuda" in printed and not out.exists()
    assert main(["train", str(config), "--dry-run", "train.iteratons=5"]) == 2
    assert "unknown option 'train.iteratons' (did you mean 'iterations'?)" in capsys.readouterr().err


def test_version_and_bare_help(capsys):
    import mtssl

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"mtssl {mtssl.__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mtssl") and "train" in out and "bench" in out
