import subprocess
import sys

import pytest

from mtssl.cli import main


def test_list_all(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("backbone", "task", "term", "uncertainty", "recipe", "dataset"):
        assert kind in out
    assert "sdf" in out and "k=1500.0" in out


def test_list_one_kind(capsys):
    assert main(["list", "uncertainty"]) == 0
    out = capsys.readouterr().out
    assert "entropy_below" in out and "backbone" not in out


def test_transforms_are_the_tasks_and_listing_them_says_so(capsys):
    assert main(["list", "transform"]) == 2
    assert "each task holds its transforms to and from segmentation (to_seg, from_seg)" in capsys.readouterr().err


def test_list_unknown_kind(capsys):
    assert main(["list", "backbnoe"]) == 2
    assert "did you mean 'backbone'" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "mtssl", "list", "task"], capture_output=True, text=True)
    assert result.returncode == 0 and "tanh" in result.stdout


def test_the_stored_listing_is_the_registries():
    """mtssl list answers from a stored listing of the built-ins (no torch import); it must equal what the
    registries hold now. After adding or changing a block: python -m mtssl.registry."""
    import json

    from mtssl.registry import LISTING, listing

    assert json.loads(LISTING.read_text()) == listing(builtins_only=True), "run: python -m mtssl.registry"


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["list"], ["list", "recipe"]])
def test_light_commands_do_not_import_torch(argv):
    """--version, --help and list answer in well under a second because they never import torch (3 s here);
    the time itself is measured in the closing note, not asserted."""
    code = (
        "import sys\nfrom mtssl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_list_shows_a_whole_description_not_a_cut_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["list", "recipe"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the tested output and the default backbone (vnet)." in out  # composed's whole first paragraph


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.iterations=0", "train.iterations must be a positive integer, got 0"),
        ("train.batch_size=-2", "train.batch_size must be a positive integer, got -2"),
        ("train.labeled_bs=0", "train.labeled_bs must be a positive integer, got 0"),
        ("train.optimizer.lr=0", "train.optimizer.lr must be positive, got 0"),
        ("train.optimizer.lr=-1e-3", "train.optimizer.lr must be positive, got -0.001"),
        ("train.labeled_bs=6", "train.labeled_bs (6) is larger than train.batch_size (4)"),
        ("data.patch=[64,64,64]", "data.patch (64, 64, 64) is larger than every volume"),
        ("model.backbone.spatial_dims=2", "model.backbone.spatial_dims is 2 but the data set's is 3: 2D data needs"),
        ("model.backbone.in_channels=3", "model.backbone.in_channels is 3 but the data set's is 1"),
    ],
)
def test_bad_values_are_refused_in_the_dry_run(tmp_path, capsys, override, message):
    import yaml

    from tests.engine.test_train import tiny_config

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--dry-run", override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_network_instance_where_a_backbone_config_belongs(tmp_path):
    from mtssl.config import ConfigError
    from mtssl.engine.trainer import Trainer
    from mtssl.nets.vnet import VNet
    from tests.engine.test_train import tiny_config

    cfg = tiny_config()
    cfg["model"]["backbone"] = VNet(in_channels=1, n_filters=4)
    with pytest.raises(ConfigError, match=r"model\.backbone is a VNet instance; it takes a config mapping"):
        Trainer.from_config(cfg, tmp_path)


def test_the_metrics_table_shows_each_class(capsys):
    from mtssl.cli import print_metrics
    from mtssl.engine.protocol import summarize

    nan = float("nan")
    rows = [
        {"case": c, "class": k, "dice": d, "jaccard": d, "hd95": h, "asd": h, "empty_prediction": e}
        for c in ("a", "b")
        for k, d, h, e in ((1, 0.9, 2.0, False), (2, 0.0, nan, True), (3, 0.8, 3.0, False))
    ]
    print_metrics(summarize(rows, "voxels", "last iteration"))
    lines = capsys.readouterr().out.splitlines()
    row = {line.split("│")[1].strip(): line for line in lines if line.count("│") > 2}
    assert set(row) >= {"all", "1", "2", "3"}
    assert "56.67" in row["all"] and "90.00" in row["1"] and "80.00" in row["3"]
    assert "0.00 ± 0.00" in row["2"] and "n/a" in row["2"] and row["2"].rstrip("│ ").endswith("2")


def test_list_prints_plain_text_and_wraps(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list", "recipe"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    text = "".join(line.split("│")[-2].strip() for line in out.splitlines() if line.count("│") == 5)
    assert "mean((sigmoid(-ksdf)-sigmoid(seg))^2)" in text.replace(" ", "")  # DTC's summary, whole


def test_probability_channels_name_the_background_only_for_softmax():
    from mtssl.engine.spec import InferenceSpec

    sizes = {"patch": (8, 8), "stride": (4, 4), "in_channels": 1, "spatial_dims": 2}
    sigmoid = InferenceSpec(**sizes, num_classes=3, class_names=("1", "2", "3")).channels()
    assert sigmoid == {"activation": "sigmoid", "background_channel": False, "channels": ["1", "2", "3"]}
    softmax = InferenceSpec(**sizes, num_classes=2, softmax=True).channels()
    assert softmax["channels"] == ["background", "1", "2"] and softmax["background_channel"]


def test_distances_are_in_pixels_for_2d_cases_and_voxels_for_3d():
    from mtssl.engine.protocol import distance_unit

    assert [distance_unit(False, 2), distance_unit(False, 3), distance_unit(True, 2)] == ["pixels", "voxels", "mm"]
