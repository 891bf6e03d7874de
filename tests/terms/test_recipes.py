"""Every recipe trains on the 3D phantom on the unchanged engine; DBiSL's components switch off cleanly."""

import json

import pytest

from mtssl.engine.run import train_run
from tests.engine.test_train import tiny_config

EXPECTED = {
    "supervised": {"seg_dice", "seg_ce"},
    "mean_teacher": {"seg_dice", "seg_ce", "consistency_teacher"},
    "ua_mt": {"seg_dice", "seg_ce", "consistency_uncertain"},
    "dtc": {"seg_dice", "sdf_mse", "consistency_sdf_seg"},
    "mcnet": {"seg_dice", "seg1_dice", "consistency_decoders"},
    "dbisl": {
        "seg_dice",
        "seg_ce",
        "sdf_mse",
        "transformed_sdf_to_seg_dice",
        "transformed_seg_to_sdf_mse",
        "consistency_sdf_seg",
        "pseudo_seg",
        "pseudo_sdf",
    },
}


def run(tmp_path, recipe, **options):
    cfg = tiny_config(iterations=20)
    cfg["recipe"] = {"name": recipe, **options}
    cfg["eval"]["max_cases"] = 1
    if recipe == "mcnet":
        cfg["model"]["backbone"] = {"n_filters": 4}  # the recipe's mcnet backbone, smaller
    if recipe == "ua_mt":
        cfg["recipe"]["passes"] = 2
    train_run(cfg, tmp_path)
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_trains_and_logs_every_term(tmp_path, recipe):
    records = run(tmp_path, recipe)
    names = {k[5:] for k in records[-1] if k.startswith("loss/")} - {"total"}
    assert names == EXPECTED[recipe]
    # The ramped terms' weights grow over this short run (full at its end), so the weighted total may
    # grow with them; the labeled loss, at a constant weight, must fall.
    if recipe != "supervised":  # (the supervised recipe's descent: tests/engine/test_train.py)
        first, last = records[0]["loss/seg_dice"], records[-1]["loss/seg_dice"]
        assert last < first, (first, last)
        assert any(records[0][k] < records[-1][k] for k in records[-1] if k.startswith("weight/"))  # a ramp moved
    # One name per term: every loss is named after a term's weight (loss/<name> or loss/<name>_<part>),
    # and every weight/<name> has its losses.
    weights = {k[7:] for k in records[-1] if k.startswith("weight/")}
    assert all(any(n == w or n.startswith(w + "_") for w in weights) for n in names), (names, weights)
    assert all(any(n == w or n.startswith(w + "_") for n in names) for w in weights), (names, weights)


@pytest.mark.parametrize(
    ("switch", "gone"),
    [
        ({"transformed_supervision": False}, {"transformed_sdf_to_seg_dice", "transformed_seg_to_sdf_mse"}),
        ({"consistency": False}, {"consistency_sdf_seg"}),
        ({"consistency": "none"}, {"consistency_sdf_seg"}),
        ({"consistency": "both"}, {"-consistency_seg_sdf"}),
        ({"consistency": "seg->sdf"}, {"consistency_sdf_seg", "-consistency_seg_sdf"}),
        ({"pseudo": False}, {"pseudo_seg", "pseudo_sdf"}),
    ],
    ids=["no-transformed-supervision", "no-consistency", "consistency-none", "both", "seg-to-sdf-only", "no-pseudo"],
)
def test_dbisl_components_switch_off(tmp_path, switch, gone):
    """``gone`` lists the terms a switch removes from the default, and (with a ``-``) those it adds."""
    records = run(tmp_path, "dbisl", **switch)
    names = {k[5:] for k in records[-1] if k.startswith("loss/")} - {"total"}
    added = {g[1:] for g in gone if g.startswith("-")}
    assert names == (EXPECTED["dbisl"] - gone) | added
    assert records[-1]["loss/total"] < records[0]["loss/total"]


def test_dbisl_without_uncertainty_still_pseudo_labels(tmp_path):
    records = run(tmp_path, "dbisl", uncertainty="none")
    assert "loss/pseudo_seg" in records[-1]


def test_dbisl_with_every_component_off_is_a_config_error():
    from mtssl.config import ConfigError
    from mtssl.registry import RECIPES

    with pytest.raises(ConfigError, match="dbisl needs at least one component"):
        RECIPES.create("dbisl", supervised=False, consistency=False, pseudo=False)
