"""Registry-driven smoke tests: every registered entry is built with its defaults and exercised."""

import typing

import pytest
import torch

from mtssl.registry import REGISTRIES

ENTRIES = [(kind, name) for kind, reg in REGISTRIES.items() if kind != "dataset" for name in reg.names()]


# Entries with required options, built with the smallest values they take.
REQUIRED = {("recipe", "composed"): {"tasks": {"seg": {}}, "terms": [{"term": "supervised"}]}}


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_entry_builds_with_defaults(kind, name):
    assert REGISTRIES[kind].create(name, **REQUIRED.get((kind, name), {})) is not None


def spatial_dims_of(kind: str, name: str) -> tuple[int, ...]:
    """The spatial ranks an entry supports, read from its ``spatial_dims`` option's Literal."""
    hints = typing.get_type_hints(REGISTRIES[kind].get(name).options)
    return typing.get_args(hints["spatial_dims"])


SHAPES = {2: (2, 1, 32, 32), 3: (2, 1, 32, 32, 32)}
BACKBONE_CASES = [(n, d) for n in REGISTRIES["backbone"].names() for d in spatial_dims_of("backbone", n)]


@pytest.mark.parametrize(("name", "spatial_dims"), BACKBONE_CASES, ids=[f"{n}-{d}d" for n, d in BACKBONE_CASES])
def test_backbone_forward_backward(name, spatial_dims):
    net = REGISTRIES["backbone"].create(name, spatial_dims=spatial_dims)
    x = torch.randn(SHAPES[spatial_dims], requires_grad=True)
    out = net(x)
    for features in out if isinstance(out, list) else [out]:
        assert features.shape == (2, net.out_channels, *x.shape[2:])
    sum(f.mean() for f in (out if isinstance(out, list) else [out])).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", REGISTRIES["task"].names())
@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_task_forward_backward(name, spatial_dims):
    from mtssl.model import MultiTaskModel
    from mtssl.nets.vnet import VNet

    task = REGISTRIES["task"].create(name)
    model = MultiTaskModel(VNet(n_filters=4, spatial_dims=spatial_dims), {name: task})
    shape = (2, 1, *([16] * spatial_dims))
    out = model(torch.randn(shape))[name]
    assert out.shape == (2, task.out_channels, *shape[2:])
    label = torch.zeros(2, *shape[2:], dtype=torch.long)
    label[(slice(None),) + (slice(4, 11),) * spatial_dims] = 1
    target = task.target(label)
    assert target.shape == (2, 1, *shape[2:]) and target.dtype == torch.float32
    loss = (task.to_seg(out) - target).square().mean() if task.has_to_seg else out.mean()
    loss = loss + task.from_seg(torch.randn(2, 1, *shape[2:], requires_grad=True)).float().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", REGISTRIES["task"].names())
@pytest.mark.parametrize("shape", [(2, 1, 12, 10), (2, 1, 8, 7, 6)], ids=["2d", "3d"])
def test_each_tasks_transforms_forward_backward(name, shape):
    """A task's transforms (its from_seg, and its to_seg where it has one) in 2D and 3D, with gradients."""
    task = REGISTRIES["task"].create(name)
    transforms = [task.from_seg] + ([task.to_seg] if task.has_to_seg else [])
    for transform in transforms:
        x = torch.randn(shape, requires_grad=True)
        out = transform(x)
        assert out.shape == shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def dataset_options(name: str, request: pytest.FixtureRequest) -> dict:
    """Options that point each registered data set at real or tiny test data; a new entry must add its own."""
    from tests.conftest import data_dir, require_data

    if name == "la":
        return {"root": str(request.getfixturevalue("la_root")), "labeled": 4}
    if name == "msd":
        return {"root": str(request.getfixturevalue("msd_root")), "patch": (8, 8, 8), "labeled": 2}
    if name == "acdc":
        return {"root": str(request.getfixturevalue("acdc_root")), "patch": (64, 64), "labeled": 3}
    if name == "images2d":
        root = require_data(data_dir() / "isbi2012", "the ISBI 2012 data set")
        return {"root": str(root), "test_cases": ("20", "21"), "foreground_value": 0, "labeled": 4}
    if name == "phantom":
        return {"num_train": 6, "num_test": 2, "labeled": 2}
    if name == "nnunet":
        from tests.data.test_nnunet import make_nnunet

        root = make_nnunet(request.getfixturevalue("tmp_path") / "Dataset001_Tiny")
        return {"root": str(root), "patch": (8, 8, 8), "labeled": 2}
    raise AssertionError(f"add test options for the new data set {name!r} here")


@pytest.mark.parametrize("name", REGISTRIES["dataset"].names())
def test_dataset_yields_a_batch(name, request):
    data = REGISTRIES["dataset"].create(name, **dataset_options(name, request))
    batch = next(iter(data.loader(batch_size=2, labeled_bs=1)))
    assert set(batch) == {"image", "label", "labeled", "spacing", "case"}
    assert batch["image"].shape[:2] == (2, data.in_channels) and batch["image"].shape[2:] == data.patch
    assert batch["labeled"].tolist() == [True, False]
    assert len(data.test) > 0 and data.test[0]["label"] is not None
