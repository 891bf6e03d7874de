"""The SLURM launcher's options and status text, without a cluster."""

import pytest

from mtssl.bench.slurm import SlurmOptions, format_states
from mtssl.config import ConfigError


def test_the_command_line_overrides_the_grid_file_and_sbatch_lines_merge():
    section = {"partition": "cpu", "time": 30, "sbatch": {"qos": "low", "constraint": "avx2"}}
    options = SlurmOptions.build(section, {"time": 90, "partition": None, "sbatch": {"qos": "high"}})
    assert (options.partition, options.time) == ("cpu", 90)
    assert options.sbatch == {"qos": "high", "constraint": "avx2"}
    params = SlurmOptions.build({"mem_gb": 1.5, "gpus_per_node": 1}).executor_parameters("grid")
    assert params["mem"] == "1536M" and params["gpus_per_node"] == 1 and params["signal_delay_s"] == 120
    assert "partition" not in params and "account" not in params


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"time": 0}, "slurm.time must be at least 1"),
        ({"array_parallelism": 0}, "slurm.array_parallelism must be at least 1"),
        ({"max_timeouts": -1}, "must be >= 0"),
        ({"partion": "gpu"}, "partion"),
    ],
)
def test_bad_slurm_options_are_named(section, message):
    with pytest.raises(ConfigError, match=message):
        SlurmOptions.build(section)


def test_the_status_lists_each_cell_with_its_log_and_counts_the_states():
    rows = [
        ("dbisl/labels4/seed0", "finished", "17_0"),
        ("dtc/labels4/seed0", "failed", "17_1 (failed)\nValueError: patch too large\nTraceback end"),
        ("supervised/labels4/seed0", "finished", "17_2"),
    ]
    text = format_states(rows)
    assert text.splitlines()[1] == "failed         dtc/labels4/seed0  17_1 (failed)"
    assert "    ValueError: patch too large" in text.splitlines()
    assert text.endswith("2 finished, 1 failed")


def test_a_dry_run_checks_the_grid_files_slurm_section(tmp_path, capsys):
    from mtssl.cli import main
    from tests.bench.test_slurm import write_grid

    grid = write_grid(tmp_path)
    text = grid.read_text() + "slurm: {partition: cpu, cpus_per_tsk: 4}\n"
    grid.write_text(text)
    args = ["bench", str(grid), "--out", str(tmp_path / "o"), "--launcher", "slurm", "--dry-run"]
    assert main(args) == 2
    assert "cpus_per_tsk" in capsys.readouterr().err
    grid.write_text(text.replace("cpus_per_tsk", "cpus_per_task"))
    assert main(args) == 0
    assert "4 cells to run" in capsys.readouterr().out
