import dataclasses
import time
from typing import Literal

import pytest

from mtssl.config import ConfigError, apply_overrides, build_dataclass, load_config, load_yaml


@dataclasses.dataclass
class Optim:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    milestones: tuple[int, ...] = (2500,)


@dataclasses.dataclass
class Train:
    iterations: int = 6000
    optim: Optim = dataclasses.field(default_factory=Optim)
    seed: int | None = 1337


def test_overrides_are_yaml_typed():
    cfg = apply_overrides({"train": {"lr": 0.01}}, ["train.lr=1e-3", "train.flag=true", "seed=null", "sizes=[1, 2]"])
    assert cfg == {"train": {"lr": 0.001, "flag": True}, "seed": None, "sizes": [1, 2]}


def test_override_does_not_mutate_input():
    base = {"a": {"b": 1}}
    apply_overrides(base, ["a.b=2"])
    assert base == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("item", "match"), [("lr", "key.sub=value"), ("a..b=1", "key.sub=value"), ("a.b.c=1", "'a.b' is a int")]
)
def test_bad_override(item, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides({"a": {"b": 1}}, [item])


def test_load_round_trip(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("iterations: 100\noptim:\n  name: adamw\n  milestones: [10, 20]\n")
    cfg = build_dataclass(Train, load_config(path, ["optim.lr=0.5"]))
    assert cfg == Train(iterations=100, optim=Optim("adamw", 0.5, (10, 20)))


def test_safe_load_only(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)


def alias_bomb(levels: int = 9) -> str:
    """A flow list whose level i is nine aliases of level i - 1: 9 ** levels values in a few hundred bytes."""
    items = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def test_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"recipe: {{name: supervised}}\nbomb: {alias_bomb()}\n")
    assert path.stat().st_size < 600  # the red team's was 527 bytes
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through YAML aliases"):
        load_config(path, ["train.iterations=2"])
    assert time.perf_counter() - start < 2
    with pytest.raises(ConfigError, match=r"override 'x=.*expands to more than"):
        apply_overrides({}, [f"x={alias_bomb()}"])


def test_small_aliases_still_load(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {patch: &p [64, 64, 32]}\neval: {patch: *p}\n")
    assert load_yaml(path) == {"data": {"patch": [64, 64, 32]}, "eval": {"patch": [64, 64, 32]}}


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"optim": {"name": "sdg"}}, r"optim.name: 'sdg' is not one of 'sgd', 'adamw' \(did you mean 'sgd'\?\)"),
        ({"optim": {"lrr": 1}}, r"option 'optim.lrr' \(did you mean 'lr'\?\); known options: name, lr, milestones"),
        ({"iterations": 1.5}, "iterations: expected an integer"),
        ({"optim": {"milestones": [1, "x"]}}, r"optim.milestones\[1\]: expected an integer"),
        ({"seed": "abc"}, "seed: 'abc' matches none of"),
        ({"optim": 3}, "optim must be a mapping"),
    ],
)
def test_validation_names_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        build_dataclass(Train, data)
