from pathlib import Path

import pytest
import torch

from mtssl import MultiTaskModel, build_model
from mtssl.config import ConfigError, load_config
from mtssl.nets.vnet import VNet
from mtssl.registry import TASKS, RegistryError

ROOT = Path(__file__).resolve().parents[1]
DTC_YAML = ROOT / "examples" / "configs" / "dtc_model.yaml"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dtc_network_from_the_example_yaml():
    model = build_model(load_config(DTC_YAML))
    assert n_params(model) == 9_448_866
    assert model.output_names == ["seg", "sdf"]


def test_example_script_prints_the_count(capsys):
    import runpy

    module = runpy.run_path(str(ROOT / "examples" / "build_model.py"))
    assert module["main"]([str(DTC_YAML)]) == 0
    assert "vnet + seg (1 ch), sdf (1 ch): 9,448,866 parameters" in capsys.readouterr().out


def test_mcnet_heads_per_decoder():
    cfg = {
        "backbone": {"name": "mcnet", "up_sampling": ["transpose", "linear", "nearest"]},
        "tasks": {"seg": {"softmax": True}},
    }
    model = build_model(cfg)
    assert n_params(model) == 15_246_566
    assert model.output_names == ["seg", "seg/1", "seg/2"]


def tiny_model(spatial_dims: int, classes: int) -> MultiTaskModel:
    multi = classes > 1
    tasks = {
        "seg": TASKS.create("seg", num_classes=classes, softmax=multi),
        "sdf": TASKS.create("sdf", num_classes=classes),
        "dist": TASKS.create("dist", num_classes=classes),
        "edge": TASKS.create("edge", num_classes=classes),
    }
    return MultiTaskModel(VNet(n_filters=4, spatial_dims=spatial_dims), tasks)


@pytest.mark.parametrize("spatial", [(16, 16, 32), (32, 16)], ids=["3d", "2d"])
@pytest.mark.parametrize("classes", [1, 2], ids=["binary", "multiclass"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_output_shapes_and_dtypes(spatial, classes, autocast):
    model = tiny_model(len(spatial), classes)
    x = torch.randn(2, 1, *spatial)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    dtype = torch.bfloat16 if autocast else torch.float32
    seg_channels = classes + 1 if classes > 1 else 1
    assert out["seg"].shape == (2, seg_channels, *spatial)
    for name in ("sdf", "dist", "edge"):
        assert out[name].shape == (2, classes, *spatial)
    assert all(v.dtype == dtype for v in out.values())
    assert out["sdf"].abs().max() <= 1 and out["dist"].min() >= 0
    sum(v.float().mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("spatial", [(16, 16, 32), (32, 16)], ids=["3d", "2d"])
def test_channels_last(spatial):
    model = tiny_model(len(spatial), 1).eval()
    x = torch.randn(2, 1, *spatial)
    expected = model(x)
    fmt = torch.channels_last_3d if len(spatial) == 3 else torch.channels_last
    model.to_channels_last()
    assert model.heads[0]["seg"][0].weight.is_contiguous(memory_format=fmt)
    out = model(x.contiguous(memory_format=fmt))
    for name in expected:
        torch.testing.assert_close(out[name], expected[name], atol=1e-5, rtol=1e-4)


def test_task_alias_and_options():
    model = build_model(
        {"model": {"backbone": {"name": "vnet", "n_filters": 4}, "tasks": {"fine": {"task": "seg", "num_classes": 3}}}}
    )
    assert model.output_names == ["fine"] and model.tasks["fine"].out_channels == 3


@pytest.mark.parametrize(
    ("cfg", "error", "match"),
    [
        (
            {"backbone": {"name": "vnet"}, "task": {}},
            ConfigError,
            r"unknown model key 'task' \(did you mean 'tasks'\?\)",
        ),
        ({"backbone": {}, "tasks": {"seg": {}}}, ConfigError, "model.backbone needs a name; known backbones: mcnet"),
        ({"backbone": {"name": "vnet"}, "tasks": {}}, ConfigError, "model.tasks must map head names"),
        ({"backbone": {"name": "vnte"}, "tasks": {"seg": {}}}, RegistryError, "Did you mean 'vnet'"),
        (
            {"backbone": {"name": "vnet"}, "tasks": {"sgd": {}}},
            RegistryError,
            r"unknown task 'sgd'\. Did you mean 'se?[dg]f?'\?",
        ),
        ({"backbone": {"name": "vnet", "filters": 8}, "tasks": {"seg": {}}}, ConfigError, "did you mean 'n_filters'"),
    ],
)
def test_build_model_errors(cfg, error, match):
    with pytest.raises(error, match=match):
        build_model(cfg)


def test_model_rejects_non_tasks():
    with pytest.raises(TypeError, match="must be a mtssl Task"):
        MultiTaskModel(VNet(n_filters=4), {"seg": torch.nn.Identity()})
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskModel(VNet(n_filters=4), {})
