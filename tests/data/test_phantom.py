import numpy as np
import pytest

from mtssl.data.phantom import make_phantom
from mtssl.registry import DATASETS


def test_deterministic():
    a, la = make_phantom((32, 32, 24), 1, seed=5)
    b, lb = make_phantom((32, 32, 24), 1, seed=5)
    c, _ = make_phantom((32, 32, 24), 1, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_three_classes_all_present(spatial_dims):
    data = DATASETS.create("phantom", spatial_dims=spatial_dims, classes=3, num_train=6, num_test=2, labeled=2)
    for case_id in [*data.split.labeled, *data.split.unlabeled, *data.test.ids]:
        assert set(np.unique(data.store[case_id].label)) == {0, 1, 2, 3}, case_id


def test_mri_like_intensities():
    image, label = make_phantom((64, 64, 48), 1, seed=0)
    assert image.shape == (1, 64, 64, 48) and image.dtype == np.float32
    assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    inside, outside = image[0][label == 1], image[0][label == 0]
    assert inside.mean() > outside.mean() + 1.0  # the organ is brighter than the background
    assert 0.05 < label.mean() < 0.5


def test_sizes_and_batches():
    data = DATASETS.create("phantom")
    assert data.store[data.split.labeled[0]].image.shape == (1, 64, 64, 48)
    batch = next(iter(data.loader(4, 2)))
    assert batch["image"].shape == (4, 1, 48, 48, 32)
    data2d = DATASETS.create("phantom", spatial_dims=2, num_train=4, num_test=1, labeled=2)
    assert data2d.store[data2d.split.labeled[0]].image.shape == (1, 96, 96)
    with pytest.raises(ValueError, match="must have 2 values"):
        DATASETS.create("phantom", spatial_dims=2, size=(32, 32, 32))


def test_the_varied_appearance_draws_each_cases_bias_contrast_and_noise():
    """Each varied case draws t in [0, 1], and its bias field, contrast and noise grow with t as documented;
    each of the three acts on the image as its name says (one case, the same random draws, one knob moved)."""
    from scipy import ndimage

    from mtssl.data.phantom import varied_appearance

    draws = [varied_appearance(i) for i in range(40)]
    t = np.array([d["bias"] / 0.5 for d in draws])
    assert t.min() < 0.1 and t.max() > 0.9  # the range is covered
    for d, ti in zip(draws, t):
        assert d["noise"] == pytest.approx(0.04 + 0.11 * ti) and d["contrast"] == pytest.approx(0.25 + 0.35 * ti)

    def case(bias=0.0, noise=0.01, contrast=0.5):
        return make_phantom((64, 64), 1, seed=3, appearance={"bias": bias, "noise": noise, "contrast": contrast})[0]

    label = make_phantom((64, 64), 1, seed=3, appearance=draws[0])[1]  # the draws move the image, not the organ
    inside, outside = label == 1, label == 0

    def gap(image):  # the organ's contrast, in the z-scored image
        return image[0][inside].mean() - image[0][outside].mean()

    def drift(image):  # the background's slow intensity change (the bias field's scale), over the gap
        return ndimage.gaussian_filter(image[0], 6.0)[outside].std() / gap(image)

    def grain(image):  # the fast one (the noise's), over the gap
        return (image[0] - ndimage.gaussian_filter(image[0], 1.0))[outside].std() / gap(image)

    assert drift(case(bias=0.5)) > 2 * drift(case(bias=0.0))
    assert grain(case(noise=0.15)) > 3 * grain(case(noise=0.01))
    assert grain(case(noise=0.1, contrast=0.25)) > 2 * grain(case(noise=0.1, contrast=0.6))
    data = DATASETS.create("phantom", spatial_dims=2, appearance="varied", size=(64, 64), patch=(48, 48), num_test=2)
    image, label = make_phantom((64, 64), 1, seed=5, appearance=varied_appearance(5))
    assert np.array_equal(data.store["phantom005"].image, image) and np.array_equal(
        data.store["phantom005"].label, label
    )
    with pytest.raises(ValueError, match="the varied phantom has one organ: classes 1"):
        make_phantom((32, 32), 3, seed=0, appearance=draws[0])


def test_the_shifted_appearance_gives_the_labeled_cases_the_easy_end_and_every_case_its_own_gain_and_offset():
    """``shifted`` (make demo's): a labeled case draws t / 4 of its varied draw, an unlabeled or test case t
    itself; each z-scored image is then scaled by e^(u t) and shifted by 1.5 v t (|u|, |v| <= 1), so its
    mean is the offset and its standard deviation the gain. Which cases are labeled follows the split,
    also when it is drawn at random."""
    from mtssl.data.phantom import shifted_appearance, varied_appearance

    for index in range(40):
        t = varied_appearance(index)["bias"] / 0.5
        hard, easy = shifted_appearance(index, labeled=False), shifted_appearance(index, labeled=True)
        for look, tt in ((hard, t), (easy, t / 4)):
            assert look["bias"] == pytest.approx(0.5 * tt) and look["noise"] == pytest.approx(0.04 + 0.11 * tt)
            assert look["contrast"] == pytest.approx(0.25 + 0.35 * tt)
            assert abs(np.log(look["gain"])) <= tt + 1e-12 and abs(look["offset"]) <= 1.5 * tt + 1e-12
        assert np.log(easy["gain"]) == pytest.approx(np.log(hard["gain"]) / 4)  # the same scanner, a quarter of t
    shifts = np.array(
        [[np.log(shifted_appearance(i, False)["gain"]), shifted_appearance(i, False)["offset"]] for i in range(40)]
    )
    assert shifts.min(axis=0).tolist() < [-0.3, -0.5] and shifts.max(axis=0).tolist() > [0.3, 0.5]  # both ways

    for selection in ("first", "random"):
        data = DATASETS.create(
            "phantom",
            spatial_dims=2,
            appearance="shifted",
            size=(64, 64),
            num_train=8,
            num_test=2,
            labeled=3,
            selection=selection,
            seed=4,
        )
        assert len(data.split.labeled) == 3
        for case_id in [*data.split.labeled, *data.split.unlabeled, *data.test.ids]:
            index = int(case_id.removeprefix("phantom"))
            look = shifted_appearance(index, labeled=case_id in data.split.labeled)
            image, label = make_phantom((64, 64), 1, seed=4 * 100_003 + index, appearance=look)
            stored = data.store[case_id]
            assert np.array_equal(stored.image, image) and np.array_equal(stored.label, label), case_id
            assert stored.image.mean() == pytest.approx(look["offset"], abs=1e-4)
            assert stored.image.std() == pytest.approx(look["gain"], rel=1e-3)
    assert data.split.labeled != ("phantom000", "phantom001", "phantom002")  # the random draw, not the first three
