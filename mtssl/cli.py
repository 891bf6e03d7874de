"""The ``mtssl`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _format_default(value: object) -> str:
    return "required" if value is dataclasses.MISSING else repr(value)


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mtssl.config import ConfigError
    from mtssl.registry import REGISTRIES, registry

    try:
        kinds = [registry(args.kind)] if args.kind else list(REGISTRIES.values())
    except ConfigError as exc:
        print(f"mtssl list: {exc}", file=sys.stderr)
        return 2
    table = Table(title="mtssl registries")
    for column in ("kind", "name", "options", "description"):
        table.add_column(column)
    for reg in kinds:
        entries = list(reg)
        if not entries:
            table.add_row(reg.kind, "[dim](none yet)[/dim]", "", "")
        for entry in entries:
            options = ", ".join(f"{k}={_format_default(v)}" for k, v in entry.defaults().items())
            table.add_row(reg.kind, entry.name, options, entry.summary)
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mtssl`` command."""
    parser = argparse.ArgumentParser(prog="mtssl", description="Semi-supervised multi-task segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list what is registered: backbones, tasks, transforms, ...")
    p_list.add_argument("kind", nargs="?", help="one registry: backbone, task, transform, strategy, recipe, dataset")
    p_list.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mtssl`` command with ``argv`` (``sys.argv[1:]`` when ``None``); return the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)
