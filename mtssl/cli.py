"""The ``mtssl`` command line: ``list``, ``train``, ``evaluate`` and ``predict``."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "print_metrics"]


def plain_text(docstring: str) -> str:
    """A docstring's reStructuredText roles and literals as plain text (``x`` and :func:`x` become x)."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", docstring)
    return re.sub(r"``([^`]+)``", r"\1", text)


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mtssl.config import ConfigError
    from mtssl.registry import REGISTRIES, listing, registry, stored_listing

    try:
        kinds = [registry(args.kind)] if args.kind else list(REGISTRIES.values())
    except ConfigError as exc:
        print(f"mtssl list: {exc}", file=sys.stderr)
        return 2
    # The stored listing of the built-ins answers without importing torch; a plugin or --import adds
    # entries that only the live registries know.
    stored = None if args.imports else stored_listing()
    rows = {k.kind: stored[k.kind] for k in kinds} if stored is not None else listing(kinds)
    table = Table(title="mtssl registries")
    for column in ("kind", "name", "options", "description"):
        table.add_column(column, overflow="fold")  # wrap, never cut, on a narrow terminal
    for kind, entries in rows.items():
        if not entries:
            table.add_row(kind, "[dim](none yet)[/dim]", "", "")
        for name, options, summary in entries:
            table.add_row(kind, name, options, plain_text(summary))
    Console().print(table)
    return 0


def print_metrics(summary: Mapping[str, Any], title: str = "test metrics") -> None:
    """A rich table of the four metrics: mean ± std over cases and classes, and one row per class
    when there are several (so an empty class is not hidden in the mean)."""
    from rich.console import Console
    from rich.table import Table

    from mtssl.engine.protocol import summarize

    rows = list(summary["per_case"])
    classes = sorted({r["class"] for r in rows})
    table = Table(title=f"{title} ({summary['cases']} cases, selection: {summary['selection']})")
    columns = ["Dice %", "Jaccard %", f"95HD ({summary['units']['hd95']})", f"ASD ({summary['units']['asd']})", "empty"]
    for column in (["class"] if len(classes) > 1 else []) + columns:
        table.add_column(column, justify="right")

    def line(part: Mapping[str, Any]) -> list[str]:
        def cell(name: str, scale: float) -> str:
            mean, std = part["mean"][name], part["std"][name]
            if mean is None:  # no finite value
                return "n/a"
            nan = part["nan_counts"][name]
            return f"{mean * scale:.2f} ± {std * scale:.2f}" + (f" ({nan} NaN)" if nan else "")

        return [
            cell("dice", 100),
            cell("jaccard", 100),
            cell("hd95", 1),
            cell("asd", 1),
            str(part["empty_predictions"]),
        ]

    if len(classes) > 1:  # the same means as the run's summary, per class
        table.add_row("all", *line(summary))
        for c in classes:
            name = dict(summary.get("class_names") or {}).get(str(c), str(c))
            table.add_row(name, *line(summarize([r for r in rows if r["class"] == c], "", "")))
    else:
        table.add_row(*line(summary))
    Console().print(table)


def _cmd_train(args: argparse.Namespace) -> int:
    from mtssl.config import ConfigError, load_config
    from mtssl.engine.progress import TrainingInterrupted
    from mtssl.engine.run import train_run

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.dry_run:
        from mtssl.engine.run import plan_run

        plan = plan_run(config, check_data=not args.no_data_check)
        print("dry run (nothing trained): " + ", ".join(f"{k}={v}" for k, v in plan.items()) + f", out={out}")
        return 0
    try:
        if args.resume and args.overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces it: choose one")
        summary = train_run(
            config, out, resume=args.resume, allow_config_change=args.allow_config_change, overwrite=args.overwrite
        )
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":
            print(f"mtssl train: {stop}; continue with --resume", file=sys.stderr)
        return 128 + stop.signum
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    if summary is not None:
        print_metrics(summary)
    print(f"run folder: {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mtssl.engine.evaluator import evaluate_run

    summary = evaluate_run(args.target, args.overrides, args.out)
    print_metrics(summary)
    print(f"metrics written to {summary['written_to']}")
    return 0


def _cmd_evaluate_folder(args: argparse.Namespace) -> int:
    from mtssl.engine.evaluator import write_metrics
    from mtssl.engine.folder_scores import class_names_of, score_folders

    names = class_names_of(args.dataset_json) if args.dataset_json else []
    summary = score_folders(args.predictions, args.truth, args.classes, names)
    print_metrics(summary, title="scores")
    if args.out:
        out = Path(args.out)
        if (out / "metrics.json").exists() and not args.overwrite:
            print(f"mtssl evaluate-folder: {out / 'metrics.json'} exists; --overwrite to replace it", file=sys.stderr)
            return 2
        write_metrics(out, summary)
        print(f"metrics written to {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from mtssl.engine.predictor import (
        gather_inputs,
        input_spacing,
        load,
        plan_outputs,
        read_case_files,
        write_prediction,
    )

    cases = gather_inputs(args.inputs)  # files, folders, nnU-Net imagesTs (channel files grouped)
    out = Path(args.out)
    firsts = [files[0] for _, files in cases]
    # every output name checked before anything is written
    names = plan_outputs(firsts, out, args.probabilities, args.overwrite, [name for name, _ in cases])
    predictor = load(args.checkpoint, tta=args.tta)
    channels = predictor.spec.channels()
    for (grouped, files), name in zip(cases, names):
        image, meta = read_case_files(files)
        probs, labels = predictor(image, source=", ".join(map(str, files)), spacing=input_spacing(meta))
        # nnU-Net's channel files (grouped by case) pair with label files of class numbers
        target = write_prediction(
            files[0],
            labels,
            probs,
            meta,
            out,
            args.probabilities,
            channels,
            name,
            class_values=grouped is not None,
            label_values=predictor.spec.label_values,
        )
        print(f"{', '.join(map(str, files))} -> {target}")
    return 0


def _slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from mtssl.config import ConfigError

    extra = {}
    for item in args.sbatch:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--sbatch takes KEY=VALUE (an #SBATCH --KEY=VALUE line), got {item!r}")
        extra[key.lstrip("-")] = value
    names = ("partition", "time", "cpus_per_task", "gpus_per_node", "mem_gb", "account", "array_parallelism")
    return {**{k: getattr(args, k) for k in names}, **({"sbatch": extra} if extra else {})}


def _cmd_bench(args: argparse.Namespace) -> int:
    from mtssl.bench.run import GridError, grid_status, report_grid, run_grid
    from mtssl.engine.progress import TrainingInterrupted

    if args.status:
        print(grid_status(args.grid, args.out, args.overrides))
        return 0
    if args.report:
        finished = report_grid(args.grid, args.out, args.published, args.overrides)
        print(f"tables and plots of {finished} finished cells in {args.out}")
        return 0
    try:
        ran = run_grid(
            args.grid,
            args.out,
            only=args.only,
            dry_run=args.dry_run,
            published=args.published,
            workers=args.workers,
            overrides=args.overrides,
            rerun_changed=args.rerun_changed,
            launcher=args.launcher,
            slurm=_slurm_overrides(args),
        )
    except TrainingInterrupted as stop:
        print(f"mtssl bench: {stop}; run the same command again to continue the grid", file=sys.stderr)
        return 128 + stop.signum
    except GridError as exc:
        print(f"mtssl bench: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"{len(ran)} cells to run")
    elif args.launcher == "slurm":
        print(
            f"submitted {len(ran)} cells to SLURM; `mtssl bench {args.grid} --out {args.out} --status` shows them, and "
            "the last cell to finish writes the tables (--report writes them now)"
        )
    else:
        table = Path(args.out) / "results.md"
        if table.is_file():
            print(table.read_text())
        print(f"ran {len(ran)} new cells; tables and plots in {args.out}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from mtssl.config import resolve_config_path, shipped_configs

    if args.action == "list":
        for name, path in shipped_configs().items():
            lines = path.read_text().splitlines()
            head = " ".join(line[2:] for line in itertools.takewhile(lambda x: x.startswith("#"), lines))
            first = head.split(". ")[0].rstrip(".")
            print(f"{name:20s} {first[:97] + '...' if len(first) > 100 else first}")
        return 0
    if not args.name:
        print("mtssl config show: name a config (mtssl config list shows them)", file=sys.stderr)
        return 2
    text = resolve_config_path(args.name).read_text()
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"mtssl config: {out} exists; give another --out, or --overwrite to replace it", file=sys.stderr)
        return 2
    out.write_text(text)
    print(f"{args.name} written to {out}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from mtssl.planner import fingerprint_json, plan_dataset, render_plan

    plan, fp, _ = plan_dataset(args.dataset, args.recipe, args.minutes, args.iterations, args.device)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"mtssl plan: {out} exists; give another --out, or --overwrite to replace it", file=sys.stderr)
        return 2
    text = render_plan(plan, fp)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".fingerprint.json").write_text(fingerprint_json(fp))
    print(text, end="")
    print(f"plan written to {out} (fingerprint: {out.with_suffix('.fingerprint.json')})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mtssl`` command."""
    import mtssl

    parser = argparse.ArgumentParser(prog="mtssl", description="Semi-supervised multi-task segmentation.")
    parser.add_argument("--version", action="version", version=f"mtssl {mtssl.__version__}")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module first (repeatable), e.g. one that registers your own recipe or backbone",
    )
    sub = parser.add_subparsers(dest="command")
    p_list = sub.add_parser("list", help="list what is registered: backbones, tasks, terms, recipes, ...")
    p_list.add_argument("kind", nargs="?", help="one registry: backbone, task, term, uncertainty, recipe, dataset")
    p_list.set_defaults(func=_cmd_list)

    p_train = sub.add_parser("train", help="train a recipe, then test it")
    p_train.add_argument("config", help="a YAML config, or the name of a shipped one (mtssl config list)")
    p_train.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p_train.add_argument("--out", help="the run folder (default: runs/<config name>)")
    p_train.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt")
    p_train.add_argument(
        "--overwrite", action="store_true", help="replace the run that <out> holds (its files are removed first)"
    )
    p_train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue even where the config differs from the checkpoint's (recorded in the run)",
    )
    p_train.add_argument(
        "--dry-run", action="store_true", help="check the config and overrides, print the plan, train nothing"
    )
    p_train.add_argument(
        "--no-data-check",
        action="store_true",
        help="with --dry-run: check the config only, not every case of the data (which reads each file once)",
    )
    p_train.set_defaults(func=_cmd_train)

    p_eval = sub.add_parser("evaluate", help="test a run folder or a checkpoint")
    p_eval.add_argument("target", help="a run folder or a .pt checkpoint")
    p_eval.add_argument("overrides", nargs="*", help="key.sub=value overrides of the saved config")
    p_eval.add_argument(
        "--out", help="where to write metrics.json and metrics.csv (default: <run>/evaluations/<overrides>)"
    )
    p_eval.set_defaults(func=_cmd_evaluate)

    p_score = sub.add_parser(
        "evaluate-folder", help="score label files on disk against the truth, with the metrics a run's test uses"
    )
    p_score.add_argument("predictions", help="a folder of predicted label maps (<case>.nii.gz, ...)")
    p_score.add_argument("truth", help="a folder of true label maps with the same case names (labelsTs)")
    p_score.add_argument("--classes", type=int, help="foreground classes (default: the largest in the truth)")
    p_score.add_argument("--dataset-json", help="a dataset.json whose labels name the classes")
    p_score.add_argument("--out", help="a folder to write metrics.json and metrics.csv into")
    p_score.add_argument("--overwrite", action="store_true", help="replace the metrics in --out")
    p_score.set_defaults(func=_cmd_evaluate_folder)

    p_pred = sub.add_parser("predict", help="segment images with a checkpoint")
    p_pred.add_argument("checkpoint", help="a .pt checkpoint or a run folder")
    p_pred.add_argument(
        "inputs", nargs="+", help="NIfTI, h5, PNG/TIFF or .npy files, or folders of them (nnU-Net's imagesTs too)"
    )
    p_pred.add_argument(
        "--tta", action="store_true", help="average over the image mirrored along the axes its training mirrored"
    )
    p_pred.add_argument("--out", required=True, help="output folder")
    p_pred.add_argument("--probabilities", action="store_true", help="also write probability maps")
    p_pred.add_argument("--overwrite", action="store_true", help="replace prediction files that exist in --out")
    p_pred.set_defaults(func=_cmd_predict)
    p_config = sub.add_parser("config", help="the example configs that ship with mtssl: list them, print one")
    p_config.add_argument("action", choices=["list", "show"], help="list the configs, or show one")
    p_config.add_argument(
        "name", nargs="?", help="with show: a config's name (mtssl config show phantom_dbisl > my.yaml)"
    )
    p_config.add_argument("--out", help="with show: write the config to this file instead of printing it")
    p_config.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p_config.set_defaults(func=_cmd_config)

    p_plan = sub.add_parser("plan", help="turn a dataset's fingerprint into a commented, runnable config")
    p_plan.add_argument("dataset", help="an nnU-Net v2 raw dataset folder (dataset.json, imagesTr, labelsTr)")
    p_plan.add_argument("--recipe", required=True, help="the recipe to plan for, e.g. dbisl or supervised")
    length = p_plan.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=float, help="a time budget: the iterations that fit, timed on this machine")
    length.add_argument("--iterations", type=int, help="the run's length in iterations")
    p_plan.add_argument("--device", default="auto", help="plan for this device (default: this machine's)")
    p_plan.add_argument("--out", required=True, help="the plan's YAML file")
    p_plan.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p_plan.set_defaults(func=_cmd_plan)

    p_bench = sub.add_parser("bench", help="run a grid of recipes x label counts x seeds and tabulate it")
    p_bench.add_argument("grid", help="a grid YAML file")
    p_bench.add_argument("overrides", nargs="*", help="key.sub=value overrides of every cell")
    p_bench.add_argument("--out", required=True, help="the grid folder (runs are kept; finished cells are skipped)")
    p_bench.add_argument("--dry-run", action="store_true", help="list the cells and whether they would run")
    p_bench.add_argument("--only", help="run only cells whose id matches this wildcard, e.g. 'dbisl/*'")
    p_bench.add_argument("--published", help="a YAML list of published rows to add to the table")
    p_bench.add_argument(
        "--rerun-changed",
        action="store_true",
        help="rerun finished cells whose config differs from what the grid asks for now (old folders move to stale/)",
    )
    p_bench.add_argument(
        "--workers", type=int, default=1, help="cells at once, each in its own process (one per GPU on a GPU machine)"
    )
    p_bench.add_argument(
        "--launcher", choices=("local", "slurm"), default="local", help="run the cells here, or submit them to SLURM"
    )
    what = p_bench.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="show which cells finished, run, wait or failed")
    what.add_argument("--report", action="store_true", help="write the tables from the finished cells now")
    slurm = p_bench.add_argument_group("SLURM (--launcher slurm; over the grid file's slurm: section)")
    slurm.add_argument("--partition", help="the partition")
    slurm.add_argument("--time", type=int, help="minutes per cell (requeued from its checkpoint when reached)")
    slurm.add_argument("--cpus", type=int, dest="cpus_per_task", help="CPU cores per cell")
    slurm.add_argument("--gpus", type=int, dest="gpus_per_node", help="GPUs per cell")
    slurm.add_argument("--mem-gb", type=float, help="memory per cell, GB")
    slurm.add_argument("--account", help="the account to charge")
    slurm.add_argument("--array-parallelism", type=int, help="the most cells running at once")
    slurm.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="an extra #SBATCH --KEY=VALUE line"
    )
    p_bench.set_defaults(func=_cmd_bench)
    return parser


def _import_modules(names: Sequence[str]) -> None:
    """Import ``--import`` modules (the working directory first on the path, as ``python -m`` has it), so
    that what they register is there for the command: train, evaluate and predict a run of your recipe."""
    import importlib

    from mtssl.config import ConfigError

    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"--import {name}: {type(exc).__name__}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mtssl`` command with ``argv`` (``sys.argv[1:]`` when ``None``); return the exit code."""
    from mtssl.config import ConfigError
    from mtssl.data.cases import DataError
    from mtssl.engine.records import CheckpointError, RunFolderError
    from mtssl.registry import RegistryError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:  # bare ``mtssl``: what it can do
        parser.print_help()
        return 0
    # key=value overrides may come after options (``mtssl train cfg.yaml --out d a.b=1``).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        _import_modules(args.imports)
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, RegistryError, RunFolderError) as exc:
        print(f"mtssl {args.command}: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # the NaN stop: named and explained, the checkpoints kept
        print(f"mtssl {args.command}: {exc}; the last checkpoint is kept (--resume after the fix)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (mtssl config list | head): nothing more to say
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:  # a read-only folder, a name too long, a full disk: the file and the reason
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mtssl {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which checkpoints and stops by itself)
        print(f"mtssl {args.command}: interrupted", file=sys.stderr)
        return 130
