import dataclasses
from typing import Literal

import pytest

import mtssl.registry as registry_module
from mtssl.config import ConfigError
from mtssl.registry import REGISTRIES, PluginWarning, Registry, RegistryError, registry


@pytest.fixture
def reg():
    r = Registry("widget")

    @r.register("linear")
    def linear(width: int = 8, mode: Literal["a", "b"] = "a", scale: float = 1.0):
        """A linear widget."""
        return ("linear", width, mode, scale)

    @r.register("log_scale")
    @dataclasses.dataclass(frozen=True)
    class LogScale:
        """Options that are the entry itself."""

        base: float = 10.0

    return r


def test_create_validates_and_builds(reg):
    assert reg.create("linear", width=4, scale=2) == ("linear", 4, "a", 2.0)
    assert reg.create("log_scale", base=2).base == 2.0


def test_names_with_wildcards(reg):
    assert reg.names() == ["linear", "log_scale"]
    assert reg.names("lin*") == ["linear"]
    assert reg.names("*scale") == ["log_scale"]
    assert "linear" in reg and len(reg) == 2


def test_duplicate_name_is_an_error(reg):
    with pytest.raises(RegistryError, match="widget 'linear' is already registered"):

        @reg.register("linear")
        def other():
            return None


def test_a_rerun_notebook_cell_registers_its_definition_again(reg):
    cell = compile("@reg.register('ratio')\ndef ratio(value: float = 0.5):\n    return value\n", "<cell 3>", "exec")
    namespace = {"reg": reg, "__name__": "__main__"}
    exec(cell, namespace)
    first = reg.get("ratio").factory
    exec(cell.replace(co_consts=cell.co_consts), namespace)  # the cell run again: a new function, same definition
    assert reg.get("ratio").factory is not first and reg.create("ratio", value=2) == 2.0
    # another cell taking the name with a different definition is still refused
    with pytest.raises(RegistryError, match=r"widget 'ratio' is already registered \(by __main__.ratio\)"):
        exec("@reg.register('ratio')\ndef half(value: float = 0.5):\n    return value / 2\n", namespace)


def test_unknown_name_lists_known_and_closest(reg):
    expected = r"unknown widget 'linaer'\. Did you mean 'linear'\? Known widget names: linear, log_scale"
    with pytest.raises(RegistryError, match=expected):
        reg.create("linaer")


def test_unknown_option_names_close_matches(reg):
    with pytest.raises(ConfigError, match=r"unknown option \"widget 'linear'.widht\" \(did you mean 'width'\?\)"):
        reg.create("linear", widht=3)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"width": "8"}, "expected an integer"),
        ({"width": True}, "expected an integer"),
        ({"mode": "c"}, r"'c' is not one of 'a', 'b'"),
        ({"scale": "big"}, "expected a number"),
    ],
)
def test_wrong_type_fails(reg, cfg, match):
    with pytest.raises(ConfigError, match=match):
        reg.create("linear", **cfg)


def test_kwargs_tunnel_is_refused():
    with pytest.raises(TypeError, match=r"takes \*\*?kwargs"):

        @Registry("x").register("bad")
        def bad(**kwargs):
            return kwargs


def test_required_option():
    r = Registry("x")

    @r.register("needs")
    def needs(size: int):
        return size

    with pytest.raises(ConfigError, match=r"missing required option \"x 'needs'\.size\""):
        r.create("needs")
    assert r.create("needs", size=3) == 3


def test_registry_kinds():
    assert set(REGISTRIES) == {"backbone", "task", "term", "uncertainty", "recipe", "dataset"}
    assert registry("terms") is REGISTRIES["term"]
    with pytest.raises(ConfigError, match="unknown registry kind 'trm' \\(did you mean 'term'\\?\\)"):
        registry("trm")


class FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"fake:{name}", target

    def load(self):
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


@pytest.fixture
def plugins(monkeypatch):
    found = []
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    monkeypatch.setattr(registry_module, "_plugin_failures", {})
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found if group == "mtssl.plugins" else [])
    return found


def test_plugin_loaded_lazily_and_once(plugins):
    calls = []
    r = Registry("gadget")

    def register():
        calls.append(1)
        r.register("from_plugin")(lambda: "made by a plugin")

    plugins.append(FakeEntryPoint("demo", register))
    assert calls == []  # nothing loads before the first look-up
    assert r.create("from_plugin") == "made by a plugin"
    assert r.names() == ["from_plugin"]
    assert calls == [1]


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (ModuleNotFoundError("No module named 'missing_dep'"), "ModuleNotFoundError: No module named 'missing_dep'"),
        (SystemExit(0), "SystemExit(0)"),  # a plugin that exits at import must not end the command
    ],
    ids=["import-error", "sys-exit"],
)
def test_failing_plugin_is_named_and_skipped(plugins, failure, cause):
    plugins.append(FakeEntryPoint("broken", failure))
    plugins.append(FakeEntryPoint("fine", lambda: r.register("from_fine")(lambda: "fine")))
    r = Registry("gadget")
    with pytest.warns(PluginWarning, match=r"mtssl plugin 'broken' \(fake:broken\) failed to load: ") as caught:
        assert r.names() == ["from_fine"]  # everything else keeps working
    assert cause in str(caught[0].message) and "running without it" in str(caught[0].message)
    with pytest.raises(RegistryError, match=r"unknown gadget 'from_broken'.*mtssl plugin 'broken'.*failed to load"):
        r.get("from_broken")


def test_plugins_come_only_from_the_declared_group(monkeypatch):
    asked = []
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: asked.append(group) or [])
    Registry("gadget").names()
    assert asked == ["mtssl.plugins"]  # no other group, and no scanning of installed modules


def test_commands_work_beside_a_plugin_that_exits_at_import(plugins, capsys):
    from mtssl.cli import main

    plugins.append(FakeEntryPoint("exits", SystemExit(0)))
    with pytest.warns(PluginWarning, match=r"mtssl plugin 'exits' \(fake:exits\) failed to load: SystemExit\(0\)"):
        assert main(["list", "recipe"]) == 0
    assert "dbisl" in capsys.readouterr().out
