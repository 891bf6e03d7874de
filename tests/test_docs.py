"""Every fenced shell and Python block in the README and docs/ runs, as written or in its documented quick form.

How a block is run (docs/contributing.md says the same, for people writing docs):

- Each page runs in its own sandbox folder, block after block, in the page's order, so a command
  can use what an earlier one wrote. The sandbox holds ``examples`` and ``docs`` (copies),
  ``benchmarks`` (a link), ``data/LA`` and ``data/ACDC`` (the restored sets), ``data/isbi2012``,
  ``../shared/data`` (the shared data) and ``case.nii.gz`` (a phantom volume standing in for "your image").
- ``<!-- docs-test: quick="ARGS" -->`` before a block appends ARGS to each of its ``mtssl`` and
  ``python`` commands: the documented quick override of a command that would take too long.
- ``<!-- docs-test: dry-run -->`` marks GPU and multi-node commands: ``mtssl`` gets ``--dry-run``,
  ``torchrun``'s own flags are checked by torch's launcher parser and its ``mtssl`` part runs with
  ``--dry-run`` and the world size it would have. A ``train`` dry run also gets ``--no-data-check``:
  reading every LA volume once per command would cost about 10 s each (tests/engine checks the data
  checks).
- ``make demo`` runs with ``DEMO_ARGS=--quick``; ``make test`` (which runs this file) is checked
  with ``make -n``; ``pip install PATH`` installs into the sandbox, not into the environment.
- Any other program fails the test: the docs hold only commands this file knows how to run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mtssl.cli import main as mtssl_main
from mtssl.registry import REGISTRIES
from tests.conftest import data_dir

REPO = Path(__file__).resolve().parents[1]
ALL_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL, PYTHON = {"bash", "sh", "shell"}, {"python"}


def blocks(page: Path) -> list[tuple[str, str, dict[str, str]]]:
    """``(language, code, directives)`` of each fenced shell or Python block of ``page``."""
    out, lang, code, pending = [], None, [], {}
    for line in page.read_text().splitlines():
        if lang is None:
            match = DIRECTIVE.search(line)
            if match:
                pending = parse_directive(match.group(1))
                continue
            fence = FENCE.match(line)
            if fence:
                lang, code = fence.group(1), []
            elif line.strip():
                pending = {}
        elif line.startswith("```"):
            if lang in SHELL | PYTHON:
                out.append((lang, "\n".join(code), pending))
            lang, pending = None, {}
        else:
            code.append(line)
    return out


def parse_directive(text: str) -> dict[str, str]:
    out = {}
    for token in shlex.split(text):
        key, _, value = token.partition("=")
        out[key] = value
    return out


PAGES = [page for page in ALL_PAGES if blocks(page)]


def commands(code: str) -> list[list[str]]:
    """Shell lines as argument lists, comments dropped (a trailing backslash joins lines)."""
    joined = code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def dry(args: list[str]) -> list[str]:
    """``args`` as a dry run (a ``train`` one without the per-case data check)."""
    return [*args, "--dry-run", *(["--no-data-check"] if args[:1] == ["train"] else [])]


class Sandbox:
    def __init__(self, root: Path, la_root: Path, data_dir: Path, acdc_root: Path) -> None:
        self.cwd = root / "page"
        self.cwd.mkdir(parents=True)
        for name in ("examples", "docs"):  # copies: commands may write there (figures, a plugin's build)
            shutil.copytree(REPO / name, self.cwd / name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        (self.cwd / "benchmarks").symlink_to(REPO / "benchmarks")
        (self.cwd / "data").mkdir()
        (self.cwd / "data" / "LA").symlink_to(la_root)
        (self.cwd / "data" / "isbi2012").symlink_to(data_dir / "isbi2012")
        (self.cwd / "data" / "ACDC").symlink_to(acdc_root)
        (root / "shared").mkdir()
        (root / "shared" / "data").symlink_to(data_dir)
        self.site: Path | None = None
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self._write_case()

    def _write_case(self) -> None:
        import nibabel as nib
        import numpy as np

        from mtssl.registry import DATASETS

        data = DATASETS.create("phantom", labeled=2, num_train=4, num_test=1, size=[80, 80, 56])
        image = data.test[0]["image"][0].numpy().astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), self.cwd / "case.nii.gz")

    def process(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        done = subprocess.run(
            argv, cwd=self.cwd, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"

    def mtssl(self, args: list[str], env: dict[str, str] | None = None) -> None:
        if self.site is not None:  # a plugin was installed into the sandbox: a fresh process sees it
            self.process([sys.executable, "-m", "mtssl", *args], env)
            return
        old_cwd, old_env = Path.cwd(), {k: os.environ.get(k) for k in env or {}}
        os.chdir(self.cwd)
        os.environ.update(env or {})
        try:
            code = mtssl_main(args)
        finally:
            os.chdir(old_cwd)
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        assert code == 0, f"mtssl {shlex.join(args)} returned {code}"

    def torchrun(self, args: list[str], env: dict[str, str], dry_run: bool) -> None:
        from torch.distributed.run import get_args_parser

        launcher = get_args_parser().parse_args(args)  # torchrun's own flags, checked by torch
        if not dry_run:
            self.process([sys.executable, "-m", "torch.distributed.run", *args], env)
            return
        assert launcher.module and launcher.training_script == "mtssl", "document torchrun ... -m mtssl"
        nodes = int(str(launcher.nnodes).split(":")[-1])
        world = nodes * int(launcher.nproc_per_node)
        self.mtssl(dry([*launcher.training_script_args]), {**env, "WORLD_SIZE": str(world)})

    def run(self, argv: list[str], directives: dict[str, str]) -> None:
        env = {}
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
            key, _, value = argv.pop(0).partition("=")
            env[key] = value
        program, args = argv[0], argv[1:]
        quick = shlex.split(directives.get("quick", ""))
        dry_run = "dry-run" in directives
        if program == "mtssl":
            self.mtssl(dry([*args, *quick]) if dry_run else [*args, *quick], env)
        elif program == "torchrun":
            self.torchrun([*args, *quick], env, dry_run)
        elif program in ("python", "python3"):
            self.process([sys.executable, *args, *quick], env)
        elif program == "make":
            target = args[0]
            extra = {"demo": ["DEMO_ARGS=--quick --out " + str(self.cwd / "demo")], "test": ["-n"]}.get(target, [])
            self.process(["make", "-C", str(REPO), *args, *extra], env)
        elif program == "pip" and args[:1] == ["install"]:
            self.site = self.cwd / "site"
            self.process(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(self.site)] + args[1:],
                env,
            )
            self.env["PYTHONPATH"] = str(self.site)
        else:
            pytest.fail(f"tests/test_docs.py does not know how to run {program!r}; document a command it can run")


def run_python(code: str, namespace: dict, cwd: Path) -> None:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        exec(compile(code, "<docs block>", "exec"), namespace)
    finally:
        os.chdir(old)


@pytest.fixture
def saved_registries():
    """Blocks register recipes in this process; each page starts from, and leaves, the registries as they were."""
    for reg in REGISTRIES.values():
        reg.names()  # load the built-ins first
    saved = {kind: dict(reg._entries) for kind, reg in REGISTRIES.items()}
    yield
    for kind, reg in REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(saved[kind])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_commands_run(page, tmp_path, la_full_root, acdc_root, saved_registries, monkeypatch):
    found = blocks(page)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sandbox = Sandbox(tmp_path, la_full_root, data_dir(), acdc_root)
    namespace: dict = {"__name__": "__docs__"}
    for lang, code, directives in found:
        if lang in SHELL:
            for argv in commands(code):
                sandbox.run(argv, directives)
        else:
            run_python(code, namespace, sandbox.cwd)


def test_blocks_are_found():
    """The parser sees the blocks (a test of the test: a silent parser would pass everything)."""
    readme = blocks(REPO / "README.md")
    assert commands(readme[0][1]) == [["make", "demo"], ["make", "test"]]
    assert any(d.get("quick") for page in PAGES for _, _, d in blocks(page))
    assert any("dry-run" in d for page in PAGES for _, _, d in blocks(page))


def test_make_figures_draws_a_real_run(tmp_path):
    import json
    import runpy

    from mtssl.engine.run import train_run
    from tests.engine.test_train import tiny_config

    cfg = tiny_config(iterations=2)
    cfg["recipe"] = {"name": "dbisl", "radius": 3.0}
    train_run(cfg, tmp_path / "run")
    script = runpy.run_path(str(REPO / "docs" / "make_figures.py"))
    script["main"](["--run", str(tmp_path / "run"), "--out", str(tmp_path / "figures")])
    png = tmp_path / "figures" / "dbisl_slice.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "figures" / "figures.json").read_text())
    assert record["case"] == "phantom004" and 0 <= record["dice"] <= 1
    with pytest.raises(SystemExit, match="run `mtssl bench` on the grid first"):
        script["main"](["--run", str(tmp_path / "run"), "--grid", str(tmp_path), "--out", str(tmp_path / "f2")])
    supervised = tiny_config(iterations=1)
    train_run(supervised, tmp_path / "sup")
    with pytest.raises(SystemExit, match="needs seg and sdf heads"):
        script["main"](["--run", str(tmp_path / "sup"), "--out", str(tmp_path / "f3")])


def test_the_site_builds_strictly(tmp_path):
    # The same strict build as `make docs` and `make test`: a docstring griffe cannot parse (two
    # parameters on one line, a name not in the signature) or a broken link fails it.
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ops = (tmp_path / "site" / "ops" / "index.html").read_text()
    assert "assets/katex/katex.min.js" in ops and "cdn" not in ops.lower()  # math from the site itself
