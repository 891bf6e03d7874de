"""The supervised baseline's gap between 2 labeled phantom volumes and all 16, over seeds.

    python benchmarks/phantom_gap.py [--seeds 0 1 2] [--iterations 300]

Trains ``examples/configs/phantom_supervised.yaml`` with ``data.labeled`` = 2 (batches of 2 labeled
+ 2 unlabeled, which supervised ignores) and 16 (batches of 4 labeled) for each seed
(``train.seed``; the phantom itself stays the same), tests on the 4 test volumes, prints
mean ± std of the four metrics and writes ``results/phantom_gap.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from mtssl.config import load_config
from mtssl.engine.run import train_run

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "examples" / "configs" / "phantom_supervised.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    for labeled in (2, 16):
        for seed in args.seeds:
            # With every volume labeled there is no unlabeled stream: the whole batch is labeled.
            overrides = [
                f"data.labeled={labeled}",
                f"train.labeled_bs={4 if labeled == 16 else 2}",
                f"train.seed={seed}",
                f"train.iterations={args.iterations}",
                "train.progress=false",
            ]
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                summary = train_run(load_config(CONFIG, overrides), out)
            row = {**summary["mean"], "seconds": time.perf_counter() - start}
            results.setdefault(str(labeled), []).append(row)
            print(f"labeled={labeled:2d} seed={seed}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()), flush=True)
    table = {}
    for labeled, rows in results.items():
        table[labeled] = {
            m: (statistics.mean(r[m] for r in rows), statistics.stdev(r[m] for r in rows) if len(rows) > 1 else 0.0)
            for m in ("dice", "jaccard", "hd95", "asd")
        }
        scale = {"dice": 100, "jaccard": 100, "hd95": 1, "asd": 1}
        cells = [f"{m} {mean * scale[m]:.2f} ± {std * scale[m]:.2f}" for m, (mean, std) in table[labeled].items()]
        print(f"{labeled:>2} labeled: " + " | ".join(cells))
    out = HERE / "results" / "phantom_gap.json"
    out.parent.mkdir(exist_ok=True)
    meta = {
        "date": date.today().isoformat(),
        "command": "python benchmarks/phantom_gap.py",
        "seeds": args.seeds,
        "iterations": args.iterations,
        "config": str(CONFIG.relative_to(HERE.parent)),
    }
    out.write_text(json.dumps({"meta": meta, "runs": results, "summary": table}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
