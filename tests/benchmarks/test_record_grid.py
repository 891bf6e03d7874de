"""``benchmarks/record_grid.py`` keeps the finished cells' small files and skips unfinished ones."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_record_keeps_finished_cells_only(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from record_grid import record

    grid = tmp_path / "grid"
    done, running = grid / "runs/dbisl/labels4/seed1", grid / "runs/dbisl/labels4/seed2"
    for cell in (done, running):
        (cell / "checkpoints").mkdir(parents=True)
        (cell / "checkpoints" / "last.pt").write_bytes(b"weights")
        (cell / "config.yaml").write_text("recipe: {name: dbisl}\n")
    (done / "metrics.json").write_text('{"mean": {"dice": 0.5}}')
    (done / "metrics.csv").write_text("case,dice\na,0.5\n")
    (done / "log.jsonl").write_text('{"iteration": 2, "val/dice": 0.4}\n')
    (grid / "results.csv").write_text("recipe,labels,seed,dice\ndbisl,4,1,0.5\n")
    cells = record(grid, tmp_path / "kept")
    assert cells == ["dbisl/labels4/seed1"]
    kept = tmp_path / "kept"
    assert (kept / "results.csv").read_text().endswith("0.5\n")
    assert sorted(p.name for p in (kept / "runs/dbisl/labels4/seed1").iterdir()) == [
        "config.yaml",
        "log.jsonl",
        "metrics.csv",
        "metrics.json",
    ]
    assert not (kept / "runs/dbisl/labels4/seed2").exists() and not list(kept.rglob("*.pt"))
