"""Packaging: the wheel builds, installs in a fresh venv and `mtssl list` runs from it; CITATION.cff is sound."""

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(REPO), "-w", str(wheels)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("mtssl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mtssl/engine/distributed.py" in names and "mtssl/nets/vnet.py" in names
    assert not any(n.startswith(("tests/", "examples/", "docs/")) for n in names)

    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The dependencies (torch and the rest) come from this environment, after the fresh one's own site-packages.
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(fresh_site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(python), "-c", "import mtssl; print(mtssl.__file__, mtssl.__version__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert where.stdout.startswith(fresh_site), where.stdout + where.stderr  # the wheel, not this checkout
    listed = subprocess.run(
        [str(env_dir / "bin" / "mtssl"), "list", "recipe"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "dbisl" in listed.stdout and "supervised" in listed.stdout
    # The example configs ship in the wheel: listed, shown, and trained by name outside any clone.
    assert "mtssl/configs/phantom_supervised.yaml" in names
    mtssl_bin = str(env_dir / "bin" / "mtssl")
    configs = subprocess.run([mtssl_bin, "config", "list"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert configs.returncode == 0 and "phantom_dbisl" in configs.stdout, configs.stderr[-2000:]
    shown = subprocess.run(
        [mtssl_bin, "config", "show", "phantom_supervised", "--out", "mine.yaml"], cwd=tmp_path, env=env
    )
    assert (
        shown.returncode == 0
        and (tmp_path / "mine.yaml").read_text() == (REPO / "mtssl" / "configs" / "phantom_supervised.yaml").read_text()
    )
    dry = subprocess.run(
        [mtssl_bin, "train", "phantom_supervised", "--dry-run", "--no-data-check"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert dry.returncode == 0 and "recipe=supervised" in dry.stdout, dry.stderr[-2000:]


def test_citation_cff():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "version", "license"):
        assert cff.get(key), key
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"] and cff["license"] == project["license"]
    cited = " ".join(ref["title"] for ref in cff["references"])
    assert "left atrium" in cited and "connectomics" in cited  # the two data sets the docs use
