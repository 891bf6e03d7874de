import warnings

import pytest
import torch
from scipy import ndimage

from mtssl.ops import boundary, signed_distance
from mtssl.registry import TASKS

NAMES = ["sdf->seg", "dist->seg", "seg->sdf", "seg->dist", "seg->edge"]


def transform(name: str, **options):
    """The transform ``name`` as its one home holds it: ``sdf->seg`` is the sdf task's ``to_seg``, ``seg->sdf``
    its ``from_seg``, with the task's options."""
    source, target = name.split("->")
    return TASKS.create(source, **options).to_seg if target == "seg" else TASKS.create(target, **options).from_seg


def blob(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = ndimage.gaussian_filter(torch.rand(shape, generator=g).numpy(), 2.0)
    return torch.from_numpy(smooth > smooth.mean() + 0.3 * smooth.std())


@pytest.fixture(params=[(1, 20, 18, 14), (2, 30, 26)], ids=["3d", "2d"])
def mask(request):
    shape = request.param
    return torch.stack([blob(shape[1:], seed=i) for i in range(shape[0])])


def saturated_logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, 1e6, -1e6).double()[:, None]


def test_every_task_holds_its_transforms():
    """Each registered task but seg maps from segmentation, and to it where it says it can (not edge)."""
    tasks = {name: TASKS.create(name) for name in TASKS.names() if name != "seg"}
    assert {f"seg->{n}" for n in tasks} | {f"{n}->seg" for n, t in tasks.items() if t.has_to_seg} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 2, 5, 6), (1, 3, 4, 5, 3)], ids=["2d", "3d"])
def test_gradcheck(name, shape):
    fn = transform(name, h=4.0) if name == "seg->sdf" else transform(name)
    scale = 1e-3 if name.endswith("->seg") else 1.0  # keep k = 1500 off the flat tails of the sigmoid
    x = (scale * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("name", NAMES)
def test_multiclass_one_channel_per_class(name):
    x = torch.randn(2, 3, 8, 8, 6)
    expected_channels = 3 if name.endswith("->seg") else 2  # softmax logits: background + 2 classes
    assert transform(name)(x).shape == (2, expected_channels, 8, 8, 6)


def test_sdf_to_seg_recovers_the_mask_except_its_boundary(mask):
    prob = transform("sdf->seg")(signed_distance(mask)[:, None])[:, 0]
    assert torch.equal(prob > 0.5, mask & ~boundary(mask, "inner"))
    assert torch.all(prob[boundary(mask, "inner")] == 0.5)


def test_dist_to_seg_recovers_the_mask(mask):
    target = TASKS.create("dist").target(mask.long())
    prob = transform("dist->seg")(target)[:, 0]
    assert torch.equal(prob > 0.5, mask)


def test_seg_to_sdf_agrees_with_the_exact_target(mask):
    soft = transform("seg->sdf", h=0.05, kernel="gauss")(saturated_logits(mask))[:, 0]
    exact = signed_distance(mask, dtype=torch.float64)
    away = ~boundary(mask, "inner")  # the exact SDF is 0 there by DTC's convention
    assert (soft - exact)[away].abs().max() <= 0.02
    assert torch.equal(soft < 0, mask)


def test_seg_to_dist_agrees_with_the_exact_target(mask):
    soft = transform("seg->dist", h=0.05)(saturated_logits(mask))
    exact = TASKS.create("dist").target(mask.long()).double()
    assert (soft - exact).abs().max() <= 0.02


def test_seg_to_edge_agrees_with_the_exact_target(mask):
    soft = transform("seg->edge")(saturated_logits(mask))[:, 0]
    inner = boundary(mask, "inner")
    # Central differences miss a boundary voxel only where the object is one voxel thin along
    # every axis that crosses the boundary; on smooth blobs that is a few percent at most.
    assert (soft[inner] >= 0.5 - 1e-6).float().mean() >= 0.95
    far = (boundary(mask, "inner") | boundary(~mask, "inner")).logical_not()
    far &= ~torch.from_numpy(ndimage.binary_dilation((inner | boundary(~mask, "inner")).numpy(), iterations=1))
    assert soft[far].max() < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_float32_under_autocast(name):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = transform(name)(torch.randn(1, 1, 6, 6, 4).bfloat16())
    assert out.dtype == torch.float32


def test_values():
    sdf = torch.tensor([-0.01, 0.0, 0.01]).view(1, 1, 1, 3)
    expected = torch.sigmoid(torch.tensor([15.0, 0.0, -15.0])).view(1, 1, 1, 3)
    torch.testing.assert_close(transform("sdf->seg")(sdf), expected)
    dist = torch.tensor([0.0, 0.001]).view(1, 1, 1, 2)
    expected = (2 * torch.sigmoid(torch.tensor([0.0, 1.5])) - 1).view(1, 1, 1, 2)
    torch.testing.assert_close(transform("dist->seg", k=1500)(dist), expected)


def test_seg_to_sdf_warns_when_a_short_window_saturates_the_normalised_map():
    from mtssl.tasks.transforms import SaturationWarning

    logits = torch.randn(1, 1, 12, 12, 8)
    with pytest.warns(SaturationWarning, match="radius 2 is under half the patch"):
        transform("seg->sdf", radius=2.0)(logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transform("seg->sdf")(logits)  # the whole patch
        transform("seg->sdf", radius=6.0)(logits)
