"""Fuzzing: malformed configs and data end in mtssl's own errors, never a traceback from deep inside a library."""

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtssl.config import ConfigError, apply_overrides, build_dataclass, load_config
from mtssl.data.cases import DataError, check_case
from mtssl.data.la import read_h5_case
from mtssl.engine.build import RunConfig, build_recipe
from mtssl.registry import DATASETS, RegistryError

OURS = (ConfigError, DataError, RegistryError)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["recipe", "data", "model", "train", "eval", "name", "iterations", "batch_size", "labeled_bs", "optimizer"]
KEYS += ["lr", "select", "patch", "stride", "labeled", "dbisl", "supervised", "phantom", "la", "backbone", "amp"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(KEYS),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner),
    max_leaves=20,
)


def check_config(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    try:
        config = load_config(path)
        cfg = build_dataclass(RunConfig, config)
        build_recipe(cfg)
    except OURS as exc:
        assert str(exc)  # a message, not an empty error
    except RecursionError:  # pragma: no cover - YAML anchors can nest deeper than Python's stack
        pytest.fail("a config nested too deep should be a ConfigError")


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_as_a_config(tmp_path, text):
    check_config(tmp_path, text)


@FUZZ
@given(tree=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_random_config_trees(tmp_path, tree):
    check_config(tmp_path, yaml.safe_dump(tree))


@FUZZ
@given(
    overrides=st.lists(
        st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), st.text(max_size=10)).map(
            lambda kv: f"{'.'.join(kv[0])}={kv[1]}"
        ),
        max_size=4,
    )
)
def test_random_overrides(overrides):
    base = {"recipe": {"name": "dtc"}, "data": {"name": "phantom"}}
    try:
        build_recipe(build_dataclass(RunConfig, apply_overrides(base, overrides)))
    except OURS as exc:
        assert str(exc)


@pytest.fixture(scope="module")
def good_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "mri_norm2.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["image"] = rng.random((12, 10, 8), dtype=np.float32)
        f["label"] = (rng.random((12, 10, 8)) > 0.5).astype(np.uint8)
    return path


@FUZZ
@given(cut=st.floats(0.0, 0.999))
def test_truncated_h5(tmp_path, good_h5, cut):
    path = tmp_path / "case.h5"
    raw = good_h5.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(DataError, match=str(path)):
        read_h5_case(path)


@FUZZ
@given(data=st.data())
def test_corrupted_h5_bytes(tmp_path, good_h5, data):
    raw = bytearray(good_h5.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "case.h5"
    path.write_bytes(bytes(raw))
    try:
        case = read_h5_case(path)
        check_case("c", case.image, case.label, num_classes=1, spatial_dims=3)
    except DataError as exc:
        assert str(exc)


DTYPES = st.sampled_from(["complex64", "str", "S2", "bool", "int8", "float16", "float64", "uint16", "int64"])


def as_dtype(values, dtype):
    if dtype == "str":  # HDF5's variable-length strings
        return values.astype(str).astype(object), h5py.string_dtype()
    return values.astype(dtype), None


@FUZZ
@given(image_dtype=DTYPES, label_dtype=DTYPES, nan=st.booleans())
def test_wrong_dtypes(tmp_path, image_dtype, label_dtype, nan):
    rng = np.random.default_rng(1)
    image, image_h5 = as_dtype(rng.random((6, 5, 4)) * 2 - 0.5, image_dtype)
    if nan and image.dtype.kind == "f":
        image[0, 0, 0] = np.nan
    label, label_h5 = as_dtype(rng.random((6, 5, 4)) * 3 - 0.5, label_dtype)
    path = tmp_path / "case.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, dtype=image_h5)
        f.create_dataset("label", data=label, dtype=label_h5)
    try:
        case = read_h5_case(path)
        check_case("c", case.image, case.label, num_classes=1, spatial_dims=3)
    except DataError as exc:
        assert str(exc)
        return
    # What was accepted is usable: a real-valued finite image and binary labels.
    assert np.isfinite(case.image).all() and set(np.unique(case.label)) <= {0, 1}


def test_phantom_options_fuzz_cheaply():
    """A few hand-picked bad data options (each builds nothing heavy)."""
    for options, match in [
        ({"labeled": 0}, "labeled"),
        ({"patch": [8, 8]}, "patch"),
        ({"size": "big"}, "size"),
    ]:
        with pytest.raises(OURS, match=match):
            DATASETS.create("phantom", **options)
