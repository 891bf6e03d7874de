"""Terms declare the heads they read and whether they need a teacher; the recipe checks the declarations
when it is built, and a dry run takes one real training step, so these errors come before any run."""

import json

import pytest
import yaml

from mtssl.config import ConfigError
from mtssl.engine.run import plan_run
from mtssl.registry import RECIPES, TERMS
from tests.engine.test_train import tiny_config

SEG_SDF = {"seg": {"task": "seg"}, "sdf": {"task": "sdf"}}
# Every built-in term with the options a seg + sdf recipe gives it (ua_mt and fused_pseudo_label keep
# "teacher"/"student" in an option once called source, which the composed recipe took for a head name; now votes).
EVERY_TERM = [
    {"term": "supervised", "output": "seg"},
    {"term": "supervised", "output": "sdf"},
    {"term": "transformed_supervised", "source": "sdf", "target": "seg"},
    {"term": "cross_task", "source": "seg", "target": "sdf"},
    {"term": "mean_teacher", "output": "seg"},
    {"term": "ua_mt", "output": "seg", "passes": 2, "votes": "teacher"},
    {"term": "fused_pseudo_label", "seg": "seg", "sdf": "sdf", "votes": "teacher"},
]


def test_every_built_in_term_is_covered():
    assert {spec["term"] for spec in EVERY_TERM} | {"multi_decoder"} == set(TERMS.names())


def composed_config(terms, teacher=None, tasks=SEG_SDF):
    cfg = tiny_config(iterations=1)
    cfg["recipe"] = {"name": "composed", "tasks": tasks, "terms": terms}
    if teacher is not None:
        cfg["recipe"]["teacher"] = teacher
    return cfg


def test_every_built_in_term_trains_in_a_yaml_recipe():
    plan = plan_run(composed_config(EVERY_TERM, teacher={"decay": 0.99}))
    losses = set(plan["first_step_losses"])
    assert {"seg_dice", "seg_ce", "sdf_mse", "consistency_teacher", "consistency_uncertain"} <= losses
    assert {"pseudo_seg", "pseudo_sdf", "consistency_seg_sdf"} <= losses
    multi = composed_config([{"term": "supervised"}, {"term": "multi_decoder", "decoders": 2}], tasks={"seg": {}})
    multi["recipe"]["backbone"] = {"name": "mcnet", "up_sampling": ["transpose", "linear"], "n_filters": 4}
    multi["model"] = {}
    assert "consistency_decoders" in plan_run(multi)["first_step_losses"]


@pytest.mark.parametrize(
    "spec", [s for s in EVERY_TERM if s["term"] in ("mean_teacher", "ua_mt", "fused_pseudo_label")]
)
def test_a_term_that_reads_a_teacher_in_a_recipe_without_one_is_a_config_error(spec):
    with pytest.raises(ConfigError, match=r"reads an EMA teacher, and the recipe has none: add one \(recipe.teacher"):
        RECIPES.create("composed", tasks=SEG_SDF, terms=[{"term": "supervised"}, spec])
    # the dry run without the data check says it too, before any run folder exists
    with pytest.raises(ConfigError, match="reads an EMA teacher"):
        plan_run(composed_config([{"term": "supervised"}, spec]), check_data=False)


def test_a_student_pseudo_label_needs_no_teacher():
    recipe = RECIPES.create("composed", tasks=SEG_SDF, terms=[{"term": "fused_pseudo_label", "votes": "student"}])
    assert recipe.teacher is None


def test_a_python_recipe_is_checked_as_well():
    from mtssl.recipes.base import Recipe, Term
    from mtssl.terms.consistency import CrossTask, MeanTeacher

    with pytest.raises(ConfigError, match="reads the output 'sdf', but no head 'sdf'"):
        Recipe(tasks={"seg": {}}, terms=(Term.of(CrossTask("sdf", "seg")),))
    with pytest.raises(ConfigError, match="the term consistency_teacher reads an EMA teacher"):
        Recipe(tasks={"seg": {}}, terms=(Term.of(MeanTeacher("seg")),))


def test_dice_and_ce_on_a_head_that_is_not_a_segmentation_are_refused():
    with pytest.raises(
        ConfigError, match=r"recipe.terms\[1\]: the supervised term on 'sdf' sets dice/ce, but 'sdf' is"
    ):
        RECIPES.create(
            "composed",
            tasks=SEG_SDF,
            terms=[{"term": "supervised"}, {"term": "supervised", "output": "sdf", "ce": 0.0}],
        )
    # a head named otherwise whose task is seg takes them
    RECIPES.create(
        "composed",
        tasks={"mask": {"task": "seg"}},
        terms=[{"term": "supervised", "output": "mask", "ce": 0}],
        evaluate="mask",
    )


def test_two_terms_returning_one_loss_name_are_refused_not_overwritten():
    twice = [{"term": "supervised", "output": "seg"}, {"term": "supervised", "output": "seg", "dice": 0.5}]
    with pytest.raises(ConfigError, match=r"the terms seg and seg_2 both return a loss named 'seg_"):
        plan_run(composed_config(twice))


def test_a_dry_run_catches_a_patch_the_backbone_cannot_take(tmp_path):
    cfg = tiny_config(iterations=1)
    cfg["data"]["patch"] = [20, 20, 20]  # a V-Net halves four times: 20 is not a multiple of 16
    with pytest.raises(
        ConfigError, match=r"data.patch \[20, 20, 20\]: .*multiples of 16.*; set data.patch to \[16, 16, 16\]"
    ):
        plan_run(cfg)
    cfg["data"]["patch"] = [16, 16, 16]
    assert plan_run(cfg)["first_step_losses"] == ["seg_ce", "seg_dice"]


def test_a_dry_run_names_the_backbone_whose_optional_dependency_is_missing(monkeypatch):
    import sys

    for module in [m for m in sys.modules if m == "monai" or m.startswith("monai.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "monai", None)  # as if MONAI were not installed
    cfg = tiny_config(iterations=1)
    cfg["model"] = {"backbone": {"name": "monai_unet"}}
    with pytest.raises(ConfigError, match=r"model.backbone.name: backbone 'monai_unet' needs MONAI.*pip install"):
        plan_run(cfg)


@pytest.mark.parametrize("term", sorted(set(TERMS.names()) - {"supervised"}))
def test_each_registered_term_dry_runs_and_trains_two_iterations_in_yaml(term, tmp_path):
    """As timm tests every model: each term, composed in YAML beside the supervised one, passes the dry run
    and trains 2 iterations, its weight and its losses logged under its one name."""
    from mtssl.engine.run import train_run

    if term == "multi_decoder":
        cfg = composed_config([{"term": "supervised"}, {"term": "multi_decoder"}], tasks={"seg": {}})
        cfg["model"] = {"backbone": {"name": "mcnet", "up_sampling": ["transpose", "linear"], "n_filters": 4}}
    else:
        spec = next(s for s in EVERY_TERM if s["term"] == term)
        cfg = composed_config([{"term": "supervised"}, spec], teacher={"decay": 0.99})
    cfg = yaml.safe_load(yaml.safe_dump(cfg))  # what a YAML file holds
    cfg["train"].update(iterations=2, log_every=1)
    cfg["eval"]["max_cases"] = 1
    losses = plan_run(cfg)["first_step_losses"]
    train_run(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    logged = {k[5:] for k in records[-1] if k.startswith("loss/")} - {"total"}
    assert logged == set(losses)
    names = {k[7:] for k in records[-1] if k.startswith("weight/")}
    assert len(names) == 2 and all(any(n == w or n.startswith(w + "_") for n in logged) for w in names)


def test_the_yaml_form_of_a_teacher_recipe_runs_from_the_command_line(tmp_path, capsys):
    from mtssl.cli import main

    path = tmp_path / "ua.yaml"
    path.write_text(yaml.safe_dump(composed_config(EVERY_TERM[:1] + EVERY_TERM[5:6], teacher={"decay": 0.9})))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "consistency_uncertain" in capsys.readouterr().out


def test_a_term_whose_losses_do_not_carry_its_name_is_refused():
    from mtssl.recipes.base import Recipe, Term

    class Misnamed:
        name, reads = "smooth", ("seg",)

        def __call__(self, ctx):
            return {"roughness": ctx.outputs["seg"].float().mean()}

    cfg = tiny_config(iterations=1)
    from mtssl.engine.build import build_components, run_config
    from mtssl.engine.run import first_step

    run = run_config(cfg)
    recipe, data, model = build_components(run)
    recipe = Recipe(tasks=recipe.tasks, terms=(*recipe.terms, Term.of(Misnamed())))
    with pytest.raises(ConfigError, match=r"the term smooth returned a loss named 'roughness'"):
        first_step(run, recipe, data, model)


def test_a_transform_between_two_tasks_that_are_not_segmentations_is_refused_with_the_way_round():
    tasks = {"seg": {}, "sdf": {"task": "sdf"}, "dist": {"task": "dist"}, "edge": {"task": "edge"}}
    for term in ("cross_task", "transformed_supervised"):
        with pytest.raises(ConfigError, match=r"no transform joins two tasks .* go through a seg head, with two terms"):
            RECIPES.create("composed", tasks=tasks, terms=[{"term": term, "source": "sdf", "target": "dist"}])
        with pytest.raises(ConfigError, match=r"the edge task has no transform to segmentation: map the other way"):
            RECIPES.create("composed", tasks=tasks, terms=[{"term": term, "source": "edge", "target": "seg"}])
    # the way round works: sdf -> seg and seg -> dist
    through = [{"term": "cross_task", "source": "sdf", "target": "seg"}]
    through.append({"term": "cross_task", "source": "seg", "target": "dist"})
    assert len(RECIPES.create("composed", tasks=tasks, terms=through).terms) == 2
