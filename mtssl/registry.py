"""One ``Registry`` type, one instance per kind of building block.

Like timm's ``register_model`` / ``create_model``, with three differences:

- a duplicate name is an error, never a silent overwrite (the same definition registered again from the
  same module, as a re-run notebook cell does, replaces the old one);
- built-in entries are registered by importing every public module of the registry's package,
  lazily on first use (a new file registers its entries without a second edit), not by star imports;
- each entry's options are a typed dataclass, so ``create(name, **cfg)`` rejects an unknown or
  mistyped option at config time, naming the option and its close matches.

Third-party plugins register through the entry-point group ``mtssl.plugins``. Each entry point
names a module (its import registers entries) or a function (called once with no arguments).
Plugins are loaded lazily, once, on the first look-up in any registry.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import inspect
import json
import threading
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from mtssl.config import ConfigError, build_dataclass, close_matches, did_you_mean

__all__ = [
    "BACKBONES",
    "DATASETS",
    "PLUGIN_GROUP",
    "RECIPES",
    "REGISTRIES",
    "TASKS",
    "TERMS",
    "UNCERTAINTIES",
    "Entry",
    "PluginWarning",
    "Registry",
    "RegistryError",
    "load_plugins",
    "plugin_failures",
    "registry",
]

PLUGIN_GROUP = "mtssl.plugins"
F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(LookupError):
    """An unknown name, or a name registered twice."""


class PluginWarning(UserWarning):
    """A plugin from the ``mtssl.plugins`` entry-point group failed to load and was skipped."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered building block: its factory and the dataclass of its options."""

    name: str
    factory: Callable[..., Any]
    options: type

    @property
    def summary(self) -> str:
        """The first paragraph of the factory's docstring, on one line (a first line alone may stop mid-sentence)."""
        doc = inspect.getdoc(self.factory) or ""
        return " ".join(doc.split("\n\n")[0].split())

    def defaults(self) -> dict[str, Any]:
        """Option names mapped to their defaults (required options map to ``dataclasses.MISSING``)."""
        out = {}
        for f in dataclasses.fields(self.options):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = dataclasses.MISSING
        return out


def options_from_signature(factory: Callable[..., Any], name: str) -> type:
    """Build the options dataclass of ``factory`` from its annotated keyword parameters."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target)
    fields = []
    for param in inspect.signature(factory).parameters.values():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            raise TypeError(
                f"cannot register {name!r}: {factory.__qualname__} takes *{param.name}; "
                "list every option as a typed parameter instead"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"cannot register {name!r}: parameter {param.name!r} is positional-only")
        tp = hints.get(param.name, Any)
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, tp))
        else:
            fields.append((param.name, tp, dataclasses.field(default=param.default)))
    required = [f for f in fields if len(f) == 2]
    optional = [f for f in fields if len(f) == 3]
    cls_name = "".join(part.capitalize() for part in _identifier(name).split("_")) + "Options"
    return dataclasses.make_dataclass(cls_name, required + optional, frozen=True)


def _same_definition(old: Callable[..., Any], new: Callable[..., Any]) -> bool:
    """Whether ``new`` is ``old`` defined again: the same module and qualified name (a re-run cell)."""
    return (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__)


def _identifier(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


class Registry:
    """A named collection of factories of one kind.

    Args:
        kind: what the entries are, e.g. ``"backbone"``; used in messages.
        package: the package whose public modules define the built-in entries, imported on first look-up.

    Example:
        >>> reg = Registry("demo")
        >>> @reg.register("scale")
        ... def scale(factor: float = 2.0):
        ...     "Multiply by a factor."
        ...     return lambda x: factor * x
        >>> reg.create("scale", factor=3)(2)
        6.0
        >>> reg.names("sc*")
        ['scale']
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, Entry] = {}
        self._builtins_loaded = package is None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    def register(self, name: str, *, options: type | None = None) -> Callable[[F], F]:
        """Decorator that registers a factory under ``name``.

        The options dataclass is ``options`` if given; the factory itself if it is a dataclass
        (``create`` then returns the validated instance); otherwise it is built from the factory's
        annotated parameters, which must all be keywords (no ``**kwargs``).

        Registering a name again from the same module under the same qualified name (a re-run notebook
        cell, a reloaded module) replaces the entry; a different object under a taken name is an error.

        Raises:
            RegistryError: ``name`` is already registered by another definition.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorator(factory: F) -> F:
            if options is not None:
                if not dataclasses.is_dataclass(options):
                    raise TypeError(f"options for {name!r} must be a dataclass type, got {options!r}")
                opts = options
            elif dataclasses.is_dataclass(factory) and isinstance(factory, type):
                opts = factory
            else:
                opts = options_from_signature(factory, name)
            with self._lock:
                other = self._entries[name].factory if name in self._entries else None
                if other is not None and not _same_definition(other, factory):
                    raise RegistryError(
                        f"{self.kind} {name!r} is already registered (by {other.__module__}.{other.__qualname__}); "
                        "choose another name"
                    )
                self._entries[name] = Entry(name, factory, opts)
            return factory

        return decorator

    def _ensure_loaded(self) -> None:
        load_plugins()
        if self._builtins_loaded:
            return
        with self._lock:
            if not self._builtins_loaded:
                for module in builtin_modules(self._package or ""):
                    importlib.import_module(module)
                self._builtins_loaded = True

    def get(self, name: str) -> Entry:
        """Return the entry registered as ``name``.

        Raises:
            RegistryError: listing the known names and the closest match.
        """
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            matches = close_matches(str(name), known)
            hint = f" Did you mean {matches[0]!r}?" if matches else ""
            failed = "".join(f" ({m})" for m in _plugin_failures.values())
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind} names: {', '.join(known) or 'none'}{failed}"
            ) from None

    def validate(self, name: str, **cfg: Any) -> Any:
        """Check ``cfg`` against the entry's options without building anything; returns the options.

        Raises:
            RegistryError: ``name`` is unknown.
            ConfigError: an option is unknown, missing or of the wrong type.
        """
        return build_dataclass(self.get(name).options, cfg, where=f"{self.kind} {name!r}")

    def create(self, name: str, **cfg: Any) -> Any:
        """Validate ``cfg`` against the entry's options and build it.

        Raises:
            RegistryError: ``name`` is unknown.
            ConfigError: an option is unknown, missing or of the wrong type.
        """
        entry = self.get(name)
        opts = self.validate(name, **cfg)
        if entry.factory is entry.options:
            return opts
        return entry.factory(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)})

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style wildcard (``"sdf*"``)."""
        self._ensure_loaded()
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._ensure_loaded()
        return iter([self._entries[n] for n in sorted(self._entries)])

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)


_plugins_lock = threading.Lock()
_plugins_loaded = False


_plugin_failures: dict[str, str] = {}


def plugin_failures() -> dict[str, str]:
    """The plugins that failed to load, by name: why, and how to run without them."""
    return dict(_plugin_failures)


def load_plugins() -> None:
    """Load every plugin of the ``mtssl.plugins`` entry-point group, once.

    A plugin that fails (an import error, an exception, even ``sys.exit`` at import) is skipped with a
    warning naming it, its entry point and the cause; everything else keeps working, and a look-up of
    a name it would have registered says that the plugin failed (:func:`plugin_failures`).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _plugins_lock:
        if _plugins_loaded:
            return
        for ep in entry_points(group=PLUGIN_GROUP):
            try:
                obj = ep.load()
                if callable(obj) and not inspect.ismodule(obj):
                    obj()
            except (Exception, SystemExit) as exc:  # SystemExit: a plugin must not end the command
                cause = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
                message = (
                    f"mtssl plugin {ep.name!r} ({ep.value}) failed to load: {cause}; running without it "
                    f"(fix or uninstall the package that provides it)"
                )
                _plugin_failures[ep.name] = message
                warnings.warn(message, PluginWarning, stacklevel=2)
        _plugins_loaded = True


def builtin_modules(package: str) -> list[str]:
    """Every public module of ``package`` (not those whose name starts with ``_``)."""
    import pkgutil

    path = importlib.import_module(package).__path__
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(path) if not m.name.startswith("_")]


# Each registry's built-ins are the entries of one package's modules, discovered on first look-up.
BACKBONES = Registry("backbone", package="mtssl.nets")
TASKS = Registry("task", package="mtssl.tasks")
TERMS = Registry("term", package="mtssl.terms")
RECIPES = Registry("recipe", package="mtssl.recipes")
DATASETS = Registry("dataset", package="mtssl.data")
UNCERTAINTIES = Registry("uncertainty", package="mtssl.terms")

#: Every registry by kind, as ``mtssl list KIND`` names them.
REGISTRIES: dict[str, Registry] = {r.kind: r for r in (BACKBONES, TASKS, TERMS, UNCERTAINTIES, RECIPES, DATASETS)}


#: The built-in entries as ``mtssl list`` shows them, so that it answers without importing torch (a
#: listing needs every block's module, and those import torch: about 3 s). ``python -m mtssl.registry``
#: rewrites it; ``tests/test_registered.py`` checks that it equals the registries.
LISTING = Path(__file__).with_name("registry_listing.json")


def listing(registries: Sequence[Registry] | None = None, builtins_only: bool = False) -> dict[str, list[list[str]]]:
    """``{kind: [[name, options, summary], ...]}`` of the live registries (their modules imported); with
    ``builtins_only``, the entries that mtssl's own modules define."""
    out = {}
    for reg in registries or list(REGISTRIES.values()):
        entries = [e for e in reg if not builtins_only or e.factory.__module__.startswith("mtssl.")]
        out[reg.kind] = [
            [e.name, ", ".join(f"{k}={_format_default(v)}" for k, v in e.defaults().items()), e.summary]
            for e in entries
        ]
    return out


def _format_default(value: object) -> str:
    return "required" if value is dataclasses.MISSING else repr(value)


def stored_listing() -> dict[str, list[list[str]]] | None:
    """The built-ins' :data:`LISTING`, or None where plugins are installed (then only the live registries
    know every entry) or the file is missing."""
    if any(True for _ in entry_points(group=PLUGIN_GROUP)) or not LISTING.is_file():
        return None
    return json.loads(LISTING.read_text())


def registry(kind: str) -> Registry:
    """Return the registry of ``kind`` (``"backbone"``, ``"term"``, ...; plurals accepted)."""
    key = kind[:-1] if kind not in REGISTRIES and kind.endswith("s") else kind
    if key == "transform":
        raise ConfigError(
            "transforms are not registered on their own: each task holds its transforms to and from segmentation "
            "(to_seg, from_seg) with their options (k, h, kernel, radius); see `mtssl list task`"
        )
    if key not in REGISTRIES:
        raise ConfigError(
            f"unknown registry kind {kind!r}{did_you_mean(kind, REGISTRIES)}; known kinds: {', '.join(REGISTRIES)}"
        )
    return REGISTRIES[key]


def write_listing() -> Path:
    """Rewrite :data:`LISTING` from the live registries (``python -m mtssl.registry``, after adding a block)."""
    LISTING.write_text(json.dumps(listing(builtins_only=True), indent=1) + "\n")
    return LISTING


if __name__ == "__main__":  # run as a script, this file is a second module: the blocks register into the first
    from mtssl import registry as _imported

    print(f"wrote {_imported.write_listing()}")
