"""YAML configs with dotted overrides, and typed validation into dataclasses.

A config is plain YAML, read with ``yaml.SafeLoader`` only (plus YAML 1.2's ``1e-3`` floats).
``key.sub=value`` overrides are parsed as YAML scalars, so ``lr=1e-3`` is a float and
``deterministic=true`` a bool. Validation converts a mapping into a dataclass, field by field, and
fails with a message that names the dotted key, the expected type or allowed values, and the
closest known keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_dataclass",
    "close_matches",
    "did_you_mean",
    "load_config",
    "load_yaml",
    "read_yaml",
    "resolve_config_path",
    "shipped_configs",
]

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.2), not as the string '1e-3'."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# A config is a few hundred values. YAML aliases can make a few hundred bytes stand for billions of
# them (an "alias bomb"), which every later copy or walk of the config would expand.
MAX_CONFIG_VALUES = 100_000


def _expanded_size(value: Any, budget: int) -> int:
    """How many values ``value`` holds with every alias expanded, counting no further than ``budget``."""
    count, stack = 0, [value]
    while stack and count <= budget:
        node = stack.pop()
        count += 1
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _safe_load(text: str, source: str = "config") -> Any:
    data = yaml.load(text, Loader=_Loader)
    if _expanded_size(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"{source} expands to more than {MAX_CONFIG_VALUES:,} values through YAML aliases (&anchor / *alias); "
            "a config is a few hundred: write the values out, or alias only small sections"
        )
    return data


class ConfigError(ValueError):
    """A config file, override or option that cannot be used as written."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``word``, best first."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x', 'y'?)"`` for the close matches of ``word``, or ``""`` when there are none."""
    matches = close_matches(word, candidates)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def shipped_configs() -> dict[str, Path]:
    """The example configs that ship in the package (``mtssl/configs/*.yaml``), by name."""
    folder = Path(__file__).resolve().parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config_path(path: str | Path) -> Path:
    """``path`` when it is a file, else the shipped config of that name (``phantom_dbisl``), else an error
    naming both ways to give a config."""
    given = Path(path)
    if given.is_file():
        return given
    shipped = shipped_configs()
    name = given.name[: -len(".yaml")] if given.name.endswith(".yaml") else given.name
    if given.parent == Path(".") and name in shipped:
        return shipped[name]
    raise ConfigError(
        f"config file not found: {given} (give the path to a .yaml file, or the name of a shipped config: "
        f"{', '.join(shipped) or 'none'}{did_you_mean(name, shipped)}; mtssl config show NAME prints one)"
    )


def read_yaml(path: str | Path) -> Any:
    """Read any YAML value from ``path``: the safe loader, guarded against alias bombs. Every YAML
    file mtssl reads goes through here.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or expands past the alias guard.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give the path to a .yaml file)")
    try:
        return _safe_load(path.read_text(), str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (:func:`read_yaml`).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not hold a mapping.
    """
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with each ``key.sub=value`` override applied.

    Values are parsed as YAML (``3`` is an int, ``1e-3`` a float, ``[1, 2]`` a list, ``null`` None).
    Missing intermediate mappings are created; validation later rejects keys that do not exist.

    Example:
        >>> apply_overrides({"train": {"lr": 0.01}}, ["train.lr=1e-3", "seed=7"])
        {'train': {'lr': 0.001}, 'seed': 7}
    """
    result = _deep_copy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        try:
            value = _safe_load(raw, f"override {item!r}") if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {exc}") from exc
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {item!r}: {where!r} is a {type(child).__name__}, not a mapping")
            node = child
        node[parts[-1]] = value
    return result


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a YAML config (a file, or a shipped config's name: :func:`resolve_config_path`) and apply
    dotted overrides (see :func:`apply_overrides`)."""
    return apply_overrides(load_yaml(resolve_config_path(path)), overrides)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def build_dataclass(cls: type[T], data: Mapping[str, Any] | T | None, where: str = "") -> T:
    """Validate ``data`` against the dataclass ``cls`` and return an instance.

    Every key must be a field of ``cls``; every value must match the field's annotation
    (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, enums, ``Optional``, unions, ``tuple``,
    ``list``, ``dict``, nested dataclasses, or any class by ``isinstance``). An int is accepted for a
    float field, and a list for a tuple field.

    Args:
        cls: the dataclass type describing the options.
        data: a mapping of option names to values (or an instance of ``cls``, returned as is).
        where: a dotted prefix for error messages, e.g. ``"model.backbone"``.

    Raises:
        ConfigError: naming the dotted key, what was expected, and close matches.

    Example:
        >>> @dataclasses.dataclass
        ... class Opt:
        ...     k: float = 1500.0
        >>> build_dataclass(Opt, {"k": 10})
        Opt(k=10.0)
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping of options, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        known = ", ".join(fields) or "none"
        raise ConfigError(
            f"unknown option {_join(where, str(key))!r}{did_you_mean(str(key), fields)}; known options: {known}"
        )
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(hints.get(name, Any), data[name], _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required option {_join(where, name)!r}")
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:  # noqa: C901 - one branch per kind of annotation
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value in args:
            return value
        allowed = ", ".join(repr(a) for a in args)
        hint = did_you_mean(str(value), [str(a) for a in args])
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}{hint}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = args if args else (Any, Any)
        return {_convert(key_tp, k, where): _convert(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        by_value = {str(m.value): m for m in tp}
        if str(value) in by_value:
            return by_value[str(value)]
        allowed = ", ".join(repr(k) for k in by_value)
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}{did_you_mean(str(value), by_value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value
