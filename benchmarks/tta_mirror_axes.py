"""Predict a run's test folder with test-time mirroring over chosen axes, to compare them on disk.

A run written before checkpoints held ``mirror_axes`` mirrors every axis under ``--tta``; this
predicts it as a current run would (``--axes 0 1``, the axes ``rot90``/``flip`` trained on), so the
two can be scored with ``mtssl evaluate-folder``:

    python benchmarks/tta_mirror_axes.py RUN Dataset001_LA/imagesTs OUT --axes 0 1
    mtssl evaluate-folder OUT Dataset001_LA/labelsTs
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import mtssl
from mtssl.engine.predictor import Predictor, gather_inputs, input_spacing, read_case_files, write_prediction


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("images", type=Path, help="a folder of inputs (nnU-Net's imagesTs)")
    parser.add_argument("out", type=Path, help="a new folder for the predictions")
    parser.add_argument("--axes", type=int, nargs="*", default=[0, 1], help="spatial axes to mirror")
    args = parser.parse_args()
    plain = mtssl.load(args.run)
    spec = dataclasses.replace(plain.spec, mirror_axes=tuple(args.axes))
    predictor = Predictor(plain.model, spec, plain.device, tta=True)
    args.out.mkdir(parents=True)  # a new folder: nothing is written over
    for grouped, files in gather_inputs([args.images]):
        image, meta = read_case_files(files)
        probs, labels = predictor(image, spacing=input_spacing(meta))
        name = grouped or files[0].name.split(".")[0]
        write_prediction(files[0], labels, probs, meta, args.out, False, spec.channels(), name, grouped is not None)
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
