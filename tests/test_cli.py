import subprocess
import sys

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
