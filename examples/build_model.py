"""Build a multi-task model from a YAML config and print its heads and parameter count.

python examples/build_model.py examples/configs/dtc_model.yaml
python examples/build_model.py examples/configs/dtc_model.yaml model.backbone.name=mcnet
"""

from __future__ import annotations

import sys

from mtssl import build_model
from mtssl.config import load_config


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cfg = load_config(argv[0], argv[1:])
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    backbone = cfg["model"]["backbone"]["name"]
    heads = ", ".join(f"{name} ({model.tasks[name.split('/')[0]].out_channels} ch)" for name in model.output_names)
    print(f"{backbone} + {heads}: {n_params:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
